"""netlab.logs without a lab: which lines are a node's, whole lines only (a line being
written waits for its end), and --follow ending once the lab's logs are removed."""

from __future__ import annotations

from pathlib import Path

from netlab import logs


def test_a_nodes_lines_are_its_exec_output_and_the_connections_it_served() -> None:
    assert logs.about("12:00:00 a | hello", "exec", "a")
    assert not logs.about("12:00:00 ab | hello", "exec", "a")
    assert logs.about("12:00:00 responders[7]: tcp b:80 <- 10.0.0.1:5000", "responders", "b")
    assert not logs.about("12:00:00 responders[7]: tcp b:80 <- 10.0.0.1:5000", "responders", "a")
    assert not logs.about("12:00:00 responders[7]: serving 2 services in 2 namespaces", "responders", "b")


def test_tail_reads_whole_lines_once(tmp_path: Path) -> None:
    exec_log, responders = tmp_path / "exec.log", tmp_path / "responders.log"
    exec_log.write_text("one\ntw")
    tail = logs.Tail({"exec": str(exec_log), "responders": str(responders)})
    assert tail.read() == [("exec", "one")]
    with exec_log.open("a") as f:
        f.write("o\n")
    responders.write_text("served\n")
    assert tail.read() == [("exec", "two"), ("responders", "served")]
    assert tail.read() == []


def test_follow_ends_when_the_logs_are_gone(tmp_path: Path) -> None:
    log = tmp_path / "exec.log"
    log.write_text("first\n")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            log.write_text("first\nsecond\n")
        else:
            log.unlink()

    seen = list(logs.follow(logs.Tail({"exec": str(log)}), sleep=sleep))
    assert seen == [[("exec", "first")], [("exec", "second")], []]
