"""Pictures of the workbench.

- :mod:`iivformer.viz.figures`: matplotlib paper figures (PDF, SVG, PNG) and result tables.
- :mod:`iivformer.viz.viewer`: plotly 3D skeletons, animated recordings, attention maps, offline HTML.
- :mod:`iivformer.viz.explorer`: the ipywidgets explorer of evaluated frames.

Import the module you need (``from iivformer.viz import figures``); nothing is imported here so
that the matplotlib-only path does not pull in plotly or ipywidgets.
"""
__all__ = ["figures", "viewer", "explorer"]
