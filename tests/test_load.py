"""The app under a small load: concurrent clients on every tab, a tiny queue that must refuse, none hanging.

The full-size run (200 requests, the app's real queue size) is ``benchmarks/load.py``.
"""

import pytest

gradio_client = pytest.importorskip("gradio_client")

from benchmarks import loadtest  # noqa: E402

IMAGE = "assets/examples/chelsea.jpg"
SEEDS = (0,)
MAX_SIZE = 2
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def served():
    """The app with a queue of 2 (its endpoints keep their own concurrency limits), its URL and solo answers."""
    import app

    demo = app.build_demo()
    _, url, _ = demo.queue(**{**app.QUEUE, "max_size": MAX_SIZE}).launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    calls = loadtest.mix(3, [IMAGE], SEEDS)
    references = loadtest.solo_references(gradio_client.Client(url, verbose=False), calls, TIMEOUT)
    yield demo, url, references
    demo.close()


def test_solo_answers_have_the_input_aspect_ratio(served):
    _, _, references = served
    assert set(references) == {loadtest.Call(e, IMAGE, 0, loadtest.STEPS[e]) for e in loadtest.ENDPOINTS}
    for call, answer in references.items():
        assert len(answer.sizes) == {"/edit": 3, "/guide": 3, "/translate": 2}[call.endpoint]  # source + results
        assert len(set(answer.sizes)) == 1
        # the results come back at the input's size (chelsea is 451 x 300), whatever the presets' working size
        assert set(answer.sizes) == {(451, 300)}


def test_a_burst_beyond_the_queue_is_answered_correctly_or_refused_and_none_hangs(served):
    demo, url, references = served
    limits = loadtest.endpoint_limits(demo)
    capacity = sum(v["concurrency_limit"] for v in limits.values()) + MAX_SIZE  # 3 running + 2 waiting
    calls = loadtest.mix(capacity + 4, [IMAGE], SEEDS)
    with loadtest.QueueMonitor(url, interval=0.05) as queue:
        outcomes = loadtest.burst(url, calls, 3, TIMEOUT, references)
    counts = loadtest.summarize(outcomes, 1.0)["counts"]
    assert counts["ok"] + counts["refused"] == len(calls), [(o.status, o.message) for o in outcomes]
    assert counts["ok"] >= MAX_SIZE and counts["refused"] >= 1
    assert {o.message for o in outcomes if o.status == "refused"} == {"Queue is full! Please try again."}
    assert max(o.seconds for o in outcomes if o.status == "refused") < TIMEOUT / 2  # refused at once, not timed out
    assert queue.max_size <= MAX_SIZE

    again = loadtest.run_call(gradio_client.Client(url, verbose=False), calls[0], TIMEOUT, references[calls[0]])
    assert again.status == "ok"  # the app still serves after the burst


def test_concurrent_clients_on_all_tabs_get_their_solo_answers(served):
    """Three clients in a closed loop: nothing is refused (3 in flight fit), every answer equals its solo answer.

    Before the per-model lock in ``api``, /edit's correction hooks on the shared U-Net leaked into a
    concurrent /guide call (wrong answers, or a KeyError for a feature never recorded).
    """
    _, url, references = served
    calls = loadtest.mix(6, [IMAGE], SEEDS)
    outcomes = loadtest.sustained(url, calls, 3, TIMEOUT, references)
    assert [o.status for o in outcomes] == ["ok"] * len(calls), [(o.status, o.message) for o in outcomes]
