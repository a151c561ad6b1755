"""The critical path of an `up` (restore speed issue): the chain that decided its length."""

from __future__ import annotations

from sandbox.critical_path import critical_path, render


def step(name, start, end, *after):
    return {"resource": name, "start": start, "end": end, "after": list(after)}


def test_the_path_follows_the_dependency_that_ended_last():
    steps = [
        step("server", 0, 3),
        step("cluster", 3, 6, "server"),
        step("tls", 3, 4, "server"),
        step("configure", 6.5, 9, "cluster", "tls"),
        step("exporters", 9, 10, "configure"),
        step("restore", 9, 30, "configure"),
        step("roles", 30, 31, "restore"),
    ]
    assert [s["resource"] for s in critical_path(steps)] == ["server", "cluster", "configure", "restore", "roles"]


def test_a_stall_shows_as_a_gap():
    lines = render(critical_path([step("a", 0, 1), step("b", 61, 62, "a")]))
    assert "gap 60.00 s, after a" in lines[1], lines


def test_dependencies_outside_the_run_are_ignored():
    assert [s["resource"] for s in critical_path([step("b", 1, 2, "not-acted-on")])] == ["b"]
    assert critical_path([]) == []
