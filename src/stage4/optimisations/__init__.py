"""The optimisations, one unit (module) each, in chain order."""
