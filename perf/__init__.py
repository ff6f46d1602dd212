"""Performance benchmarks of the EverySkill data layer.

Run them with ``scripts/perf.sh`` (see ``perf.__main__``). One module per
benchmark, each with a ``measure`` function returning
:class:`perf.harness.Figure` objects: ``single_feedback``,
``measurement_batch``, ``aggregate_read``, ``concurrent_writers``,
``rate_limits``, ``http_api``, ``admin_pages``, ``run_completion`` and
``admin_memory``. The data is built by ``perf.data``, ``main.py`` and the
HTTP benchmarks' baseline app (``perf.raw_http``) are served by
``perf.served``, and the results are reported by ``perf.report``.
"""
