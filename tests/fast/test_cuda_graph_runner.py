"""fast/cuda_graph/graph.py's _CupyGraph, the part of the CUDA graph that only CuPy runs, against a stand-in of the CuPy API.

No GPU is here, so the calls _CupyGraph makes are checked against a recording stand-in of the few CuPy pieces it
uses (streams, events, a memory pool, cupy._core's accelerator switches): the order of the streams' events, the
capture ended after an error with that error raised, CUB off around the warm-up and the capture, and a launch on
the caller's stream with no event. The stand-in follows CuPy 14.2's signatures (cupy/cuda/stream.pyx,
cupy/cuda/graph.pyx, cupy/_core/_accelerator.pyx); the real thing runs in tests/fast/test_cuda_graph.py's GPU tests.
"""
import contextlib

import pytest
from fake_device import _FakeCore

from scratchgan.fast.cuda_graph import graph


class Invalidated(RuntimeError):
    """cudaErrorStreamCaptureInvalidated, as end_capture raises it after a failed call in the capture."""


class StandInCupy:
    """cupy with cuda.Stream / Event / MemoryPool / using_allocator / get_current_stream and _core: each call is
    appended to ``calls``; ``invalidate`` makes the next end_capture raise."""

    def __init__(self):
        self.calls, self.current, self.invalidate, self.events = [], None, False, []
        self._core = _FakeCore()
        outer = self

        class Event:
            def __init__(self, block=False, disable_timing=False, interprocess=False):
                self.disable_timing = disable_timing
                outer.events.append(self)

        class Graph:
            def launch(self, stream=None):
                outer.calls.append(("launch", stream))

        class Stream:
            def __init__(self, null=False, non_blocking=False, ptr=0, name="stream"):
                self.name, self.capturing = name, False

            def record(self, event=None):
                outer.calls.append(("record", self.name, event))
                return event if event is not None else Event()

            def wait_event(self, event):
                outer.calls.append(("wait", self.name, event))

            def begin_capture(self, mode=None):
                outer.calls.append(("begin_capture", self.name))
                self.capturing = True

            def end_capture(self):
                outer.calls.append(("end_capture", self.name))
                self.capturing = False
                if outer.invalidate:
                    raise Invalidated("cudaErrorStreamCaptureInvalidated")
                return Graph()

            def __enter__(self):
                self.previous, outer.current = outer.current, self
                return self

            def __exit__(self, *exc):
                outer.current = self.previous
                return False

        class MemoryPool:
            def malloc(self, size):
                raise AssertionError("nothing is allocated in these tests")

        @contextlib.contextmanager
        def using_allocator(allocator=None):
            outer.calls.append(("allocator", allocator))
            yield

        self.default = Stream(name="default")
        self.current = self.default
        self.cuda = type("cuda", (), dict(
            Stream=Stream, Event=Event, MemoryPool=MemoryPool, using_allocator=staticmethod(using_allocator),
            get_current_stream=staticmethod(lambda: outer.current)))


def _runner():
    cupy = StandInCupy()
    runner = graph._CupyGraph(cupy)
    runner.stream.name = "step"
    return cupy, runner


def test_two_events_are_made_once_without_timing():
    cupy, runner = _runner()
    runner.run_eagerly(lambda: None)
    runner.capture(lambda: None)
    for _ in range(3):
        runner.launch()
    assert len(cupy.events) == 2 and all(e.disable_timing for e in cupy.events)


def test_warm_up_and_capture_run_on_the_steps_stream_after_the_callers_work_with_cub_off():
    cupy, runner = _runner()
    seen = []

    def body():
        seen.append((cupy.current.name, cupy.current.capturing, cupy._core.get_reduction_accelerators(),
                     cupy._core.get_routine_accelerators()))
    runner.run_eagerly(body)
    runner.capture(body)
    assert seen == [("step", False, [], []), ("step", True, [], [])]
    assert cupy._core.get_reduction_accelerators() == cupy._core.get_routine_accelerators() == ["cub"]
    before, after = cupy.events
    assert cupy.calls[:3] == [("record", "default", before), ("wait", "step", before), ("allocator", runner.pool.malloc)]
    assert cupy.calls[3:5] == [("record", "step", after), ("wait", "default", after)]
    assert cupy.current is cupy.default


def test_a_launch_runs_on_the_callers_stream_with_no_event():
    cupy, runner = _runner()
    runner.capture(lambda: None)
    cupy.calls.clear()
    runner.launch()
    assert cupy.calls == [("launch", cupy.default)]


def test_an_error_in_the_capture_ends_it_drops_the_graph_and_is_the_one_raised():
    """The body fails (a sync, say); ending the capture then raises cudaErrorStreamCaptureInvalidated, which
    hides the cause: the body's error is raised, the stream is no longer capturing, no graph is kept."""
    cupy, runner = _runner()
    runner.capture(lambda: None)
    assert runner.graph is not None

    def failing():
        raise ValueError("the cause")
    cupy.invalidate = True
    with pytest.raises(ValueError, match="the cause"):
        runner.capture(failing)
    assert runner.graph is None and not runner.stream.capturing
    assert ("end_capture", "step") in cupy.calls and cupy.current is cupy.default
    assert cupy._core.get_routine_accelerators() == ["cub"]
    cupy.invalidate = False
    runner.capture(lambda: None)
    assert runner.graph is not None


def test_an_invalidated_capture_without_a_python_error_is_reported():
    cupy, runner = _runner()
    cupy.invalidate = True
    with pytest.raises(Invalidated):
        runner.capture(lambda: None)
    assert runner.graph is None
