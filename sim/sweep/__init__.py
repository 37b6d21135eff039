"""Capacity sweeps: a grid of scenario variants × replications, on Dask, with CIs and a report.

Modules (import them directly; this package imports nothing, so ``ccsim`` starts fast)::

    sim.sweep.grid       parse_axis, plan_sweep (every point validated), replication_seed, capacity_cost
    sim.sweep.execute    open_executor: in-process, a Dask LocalCluster or a scheduler; run_task
    sim.sweep.run        run_sweep: replications into the journal and tables, with --resume
    sim.sweep.aggregate  mean and CI per point, SLO verdicts, the cheapest point
    sim.sweep.stats      mean_ci (Student t), knee_index (the knee rule)
    sim.sweep.report     build_sweep_report: OUT/sweep.html
    sim.sweep.capacity   capacity_search: bisection for the smallest value meeting a target
    sim.sweep.cli        the ``ccsim sweep`` and ``ccsim capacity`` subcommands

``docs/sweeps.md`` is the user's guide.
"""
