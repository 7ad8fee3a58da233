"""``report.md`` and a self-contained ``report.html`` from a study's run directories.

The report reads *only* the run-directory contract (``result.json``, ``metrics.jsonl``,
``config.toml``, plus the ``study.toml`` a study copies into its folder); it never imports
torch, a model, a method or the study runner, so it can be rebuilt at any time from a copied
study folder. One job per module, each importing only the ones above it:

- :mod:`reprlab.report.load` -- find, read and check run directories (:class:`~.load.Run`,
  :class:`~.load.Study`, :func:`~.load.load_study`, :func:`~.load.read_metrics`).
- :mod:`reprlab.report.tables` -- groups, mean ± std, gains over scratch, fraction lines,
  CNN-vs-ViT groups, SSL method rows, sweep trials: pure data, no matplotlib.
- :mod:`reprlab.report.plots` -- matplotlib figures built from those tables.
- :mod:`reprlab.report.document` -- the block model and its Markdown / HTML renderers.
- :mod:`reprlab.report.build` -- the report's sections and :func:`~.build.build_report`.

Nothing is imported here, so ``import reprlab.report.tables`` does not pay for matplotlib.
"""
