"""Concurrent calls from Python threads: kernels release the GIL, so this is real concurrency."""

from concurrent.futures import ThreadPoolExecutor

import aggkit
import numpy as np


def test_concurrent_calls_give_correct_results(rng):
    inputs = [rng.standard_normal((15, 20_000)).astype(np.float32) for _ in range(8)]
    calls = [
        lambda x: aggkit.median(x),
        lambda x: aggkit.trimmed_mean(x, f=3),
        lambda x: aggkit.mean(x),
        lambda x: aggkit.multi_krum(x, f=2),
    ]
    expected = [[c(x) for c in calls] for x in inputs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [[pool.submit(c, x) for c in calls] for x in inputs for _ in range(3)]
        results = [[f.result() for f in row] for row in futures]
    for k, row in enumerate(results):
        for got, want in zip(row, expected[k // 3], strict=True):
            np.testing.assert_array_equal(got, want)


def test_set_num_threads_while_others_compute(rng, threads):
    x = rng.standard_normal((9, 50_000))
    want = aggkit.median(x)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futs = [pool.submit(aggkit.median, x) for _ in range(6)]
        for t in (1, 2, 1, 2):
            aggkit.set_num_threads(t)
        for f in futs:
            np.testing.assert_array_equal(f.result(), want)
