"""The gate's record of who can see what reads as a sentence, whatever roles exist."""

from __future__ import annotations

from stage4.catalog.visibility import Reach, Read


def test_no_api_role_says_there_was_nothing_to_check() -> None:
    line = Reach(table="public.geometrias", rls=False).summary()
    assert line == (
        "who can see what: no API role (anon, authenticated, service_role) exists here: "
        "nothing to check"
    )


def test_roles_checked_are_named_with_the_relations_read() -> None:
    reach = Reach(table="public.geometrias", rls=True, roles=["anon", "authenticated"])
    reach.reads[("anon", "public.geometrias")] = Read(rows=3)
    reach.reads[("authenticated", "public.geometrias")] = Read(rows=5)
    assert reach.summary() == (
        "who can see what: anon, authenticated read and write no more than before "
        "(1 readable relations checked)"
    )


def test_roles_that_could_not_be_checked_are_named_alone() -> None:
    reach = Reach(table="public.geometrias", rls=True, unchecked=["service_role"])
    assert reach.summary() == (
        "who can see what: no API role could be checked; not checked (cannot SET ROLE): "
        "service_role"
    )
