"""Performance benchmarks of the EverySkill data layer.

Run them with ``scripts/perf.sh`` (see ``perf.__main__``). One module per
benchmark, each with a ``measure`` function returning
:class:`perf.harness.Figure` objects: ``single_feedback``,
``measurement_batch``, ``aggregate_read``, ``concurrent_writers``,
``admin_pages``, ``run_completion`` and ``admin_memory``. The data is built
by ``perf.data``, ``main.py`` is served by ``perf.served``, and the results
are reported by ``perf.report``.
"""
