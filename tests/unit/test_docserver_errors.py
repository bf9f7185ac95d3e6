"""The docserver's exception tree, and getting its one failure out of task-group groups."""

from __future__ import annotations

from docserver.errors import (
    ActivityKeyRefused,
    AuthConfigError,
    AuthFailed,
    DocserverConfigError,
    DocserverError,
    ListenFailed,
    MalformedMessage,
    sole_docserver_error,
)


def test_every_class_is_a_docserver_error() -> None:
    for cls in (ActivityKeyRefused, AuthConfigError, AuthFailed, ListenFailed, MalformedMessage):
        assert issubclass(cls, DocserverError)
    assert issubclass(AuthConfigError, DocserverConfigError)  # exit 78 like any config error


def test_the_one_failure_comes_out_of_nested_groups() -> None:
    failure = ListenFailed("cannot listen on 127.0.0.1:8787")
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [failure])])
    assert sole_docserver_error(group) is failure


def test_anything_else_in_the_group_keeps_the_group() -> None:
    assert sole_docserver_error(ExceptionGroup("g", [KeyError("x")])) is None
    mixed = ExceptionGroup("g", [ListenFailed("port"), KeyError("x")])
    assert sole_docserver_error(mixed) is None
    two = ExceptionGroup("g", [ListenFailed("port"), ActivityKeyRefused("key")])
    assert sole_docserver_error(two) is None
