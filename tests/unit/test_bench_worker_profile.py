"""The bench's reading of py-spy's raw output: a torn sample (``--nonblocking`` reads a frame's
name while the interpreter changes it) must not cost the run its report."""

from __future__ import annotations

from bench.worker_profile import read_raw_stacks, top_costs


def test_raw_lines_become_sample_counts_per_stack():
    text = "a (m.py:1);b (m.py:2) 3\na (m.py:1) 2\n"
    counts, unreadable = read_raw_stacks(text)
    assert counts == {("a (m.py:1)", "b (m.py:2)"): 3, ("a (m.py:1)",): 2}
    assert unreadable == 0


def test_a_torn_frame_name_is_skipped_and_counted_not_fatal():
    # As seen in a real profile: a frame name with control characters. str.splitlines() splits at
    # \x1c and \x0b too, which leaves a line ending in "(" where the count should be.
    torn = "a (m.py:1);\x0bgarbage\x1c\x14 (;b (m.py:2) 1"
    counts, unreadable = read_raw_stacks(f"a (m.py:1) 4\n{torn}\nno count here\n")
    assert counts[("a (m.py:1)",)] == 4
    assert sum(counts.values()) == 5        # the torn line keeps its count: only its names are odd
    assert unreadable == 1                  # "no count here"
    assert top_costs(counts)["samples"] == 5
