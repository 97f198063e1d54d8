"""Figures and HTML blocks drawn from saved results (never a model, never a run store):
heatmaps, circuit graphs, faithfulness curves, per-method figures, notebook displays and the
page shell (:mod:`.html`). The run page that reads a run store is
:func:`modelweave.experiments.build_report`."""
