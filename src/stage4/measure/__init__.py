"""The measuring instrument: the app's reads and writes as it sends them, benchmarked,
fingerprinted, checked for freshness, compared by the decision rule, stored and reported."""
