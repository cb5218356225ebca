from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

from pipesim import Model, simulate


def test_two_processes_give_the_same_trials_as_inline(issue_funnel: Model) -> None:
    _, inline = simulate(issue_funnel, 3500, seed=9)
    with ProcessPoolExecutor(max_workers=2) as pool:
        _, spread = simulate(issue_funnel, 3500, seed=9, executor=pool)
    assert np.array_equal(inline.revenue, spread.revenue)


def test_des_blocks_on_threads_give_the_same_trials(issue_funnel: Model) -> None:
    small = issue_funnel.with_new_leads(100)
    _, inline = simulate(small, 120, seed=2, engine="des")
    with ThreadPoolExecutor(max_workers=3) as pool:
        _, spread = simulate(small, 120, seed=2, engine="des", executor=pool)
    assert np.array_equal(inline.revenue, spread.revenue)


def test_dask_local_cluster_gives_the_same_trials(issue_funnel: Model) -> None:
    from distributed import Client, LocalCluster

    _, inline = simulate(issue_funnel, 2500, seed=7)
    with (
        LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster,  # type: ignore[no-untyped-call]
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        _, spread = simulate(issue_funnel, 2500, seed=7, executor=client.get_executor())
    assert np.array_equal(inline.revenue, spread.revenue)
