"""Interactive 3D views with plotly: one frame, an animated recording, attention maps, and a
standalone HTML export that plays offline (plotly.js embedded, no kernel, no network).

Poses are (J, 3) root-relative millimetres in the world frame (z up). In every skeleton figure
trace 0 is the ground truth, traces 1..len(BONES) the predicted bones (one trace per bone, coloured
by the error of the joint it ends in) and the last trace the predicted joints with the colour bar.
"""
from functools import cache
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.colors import get_colorscale, sample_colorscale
from plotly.subplots import make_subplots

from iivformer import cameras, skeleton
from iivformer.files import atomic_write
from iivformer.errors import IIVFormerError

ERROR_COLORSCALE = "RdYlGn_r"  # green: small error, red: large
TRUTH_COLOUR = "rgba(120, 120, 120, 0.75)"
AXIS_TITLES = {"xaxis_title": "x (mm)", "yaxis_title": "y (mm)", "zaxis_title": "z (mm)"}


def error_colours(errors_mm, cmax: float) -> list:
    """The colours of errors on the skeleton colour scale (0 .. cmax mm), in one call: plotly looks a
    scale up by name and checks it on every call (an animated recording made ~4000 calls)."""
    points = np.clip(np.asarray(errors_mm, dtype=float).reshape(-1) / max(cmax, 1e-9), 0, 1)
    return sample_colorscale(_error_scale(), [float(point) for point in points])


def error_colour(error_mm: float, cmax: float) -> str:
    """The colour of one error on the skeleton colour scale (0 .. cmax mm)."""
    return error_colours([error_mm], cmax)[0]


@cache
def _error_scale() -> list:
    return get_colorscale(ERROR_COLORSCALE)


def _lines(pose) -> tuple:
    """x, y, z of all bones of `pose` (J, 3) as one polyline with None gaps."""
    coordinates = [[], [], []]
    for child, parent in skeleton.BONES:
        for axis in range(3):
            coordinates[axis] += [float(pose[parent, axis]), float(pose[child, axis]), None]
    return tuple(coordinates)


def skeleton_traces(prediction, target, errors, cmax) -> list:
    """Trace updates (dicts) for one frame, in the trace order of :func:`skeleton_figure`."""
    prediction, target, errors = np.asarray(prediction), np.asarray(target), np.asarray(errors)
    x, y, z = _lines(target)
    traces = [dict(x=x, y=y, z=z)]
    colours = error_colours([errors[child] for child, _ in skeleton.BONES], cmax)
    for (child, parent), colour in zip(skeleton.BONES, colours):
        bone = prediction[[parent, child]]
        traces.append(dict(x=bone[:, 0], y=bone[:, 1], z=bone[:, 2], line=dict(color=colour, width=7)))
    traces.append(dict(x=prediction[:, 0], y=prediction[:, 1], z=prediction[:, 2],
                       marker=dict(color=errors, cmin=0, cmax=cmax, colorscale=ERROR_COLORSCALE, size=4,
                                   colorbar=dict(title=dict(text="joint error (mm)"))),
                       text=[f"{name}: {error:.1f} mm" for name, error in zip(skeleton.JOINT_NAMES, errors)]))
    return traces


def skeleton_figure(prediction, target, errors=None, title="", cmax=None, extent=None) -> go.Figure:
    """3D skeletons: ground truth in grey, the prediction with bones coloured by the per-joint
    error `errors` (J,) in mm (default: the distance to the target); a cube of +-`extent` mm
    around the root (default: fits both poses), equal aspect, axes in mm."""
    prediction, target = np.asarray(prediction, dtype=float), np.asarray(target, dtype=float)
    errors = np.linalg.norm(prediction - target, axis=-1) if errors is None else np.asarray(errors, dtype=float)
    cmax = float(cmax) if cmax else float(max(np.ceil(errors.max() / 10) * 10, 10))
    updates = skeleton_traces(prediction, target, errors, cmax)
    traces = [go.Scatter3d(mode="lines", name="ground truth", line=dict(color=TRUTH_COLOUR, width=9),
                           hoverinfo="skip", **updates[0])]
    for index, ((child, parent), update) in enumerate(zip(skeleton.BONES, updates[1:-1])):
        traces.append(go.Scatter3d(mode="lines", name="prediction (colour: error)", legendgroup="prediction",
                                   showlegend=index == 0, hoverinfo="skip",
                                   meta=f"{skeleton.JOINT_NAMES[parent]}-{skeleton.JOINT_NAMES[child]}", **update))
    traces.append(go.Scatter3d(mode="markers", name="predicted joints", hoverinfo="text", **updates[-1]))
    fig = go.Figure(traces)
    fig.update_layout(title=dict(text=title), scene=cube_scene(extent or fit_extent([prediction, target])),
                      uirevision="keep", margin=dict(l=0, r=0, t=50, b=0), legend=dict(x=0, y=1), height=550)
    return fig


def fit_extent(poses, quantile=100.0) -> float:
    """Half-size (mm) of a root-centred cube holding the `quantile` % largest coordinate of `poses`."""
    largest = np.percentile(np.abs(np.asarray(poses, dtype=float)), quantile)
    return float(np.ceil(largest / 100) * 100 + 100)


def cube_scene(extent: float) -> dict:
    """Scene axes from -extent to +extent mm on x, y and z (z up), equal scale."""
    axis = dict(range=[-extent, extent], autorange=False)
    return dict(aspectmode="cube", xaxis=axis, yaxis=axis, zaxis=axis, **AXIS_TITLES)


def sequence_figure(evaluation, subject, recording, frames=None, step=1, protocol="p1", fps=50,
                    pixels=None, views=None) -> go.Figure:
    """An animated figure of one recording (`frames`: the frame numbers to keep, e.g. range(0, 500),
    then every `step`-th) with a frame slider and play/pause buttons. With `pixels` (N, V, J, 2), the
    2D input of every evaluated sample (in the cameras `views`, default 0..V-1), each view's 2D is
    drawn beside the 3D, frame by frame, so a bad frame can be traced to the camera that caused it."""
    samples = np.flatnonzero((evaluation.subjects == subject) & (evaluation.recordings == recording))
    samples = samples[np.argsort(evaluation.frame_index[samples], kind="stable")]
    if frames is not None:
        samples = samples[np.isin(evaluation.frame_index[samples], np.asarray(list(frames)))]
    samples = samples[::step]
    if len(samples) == 0:
        raise IIVFormerError(f"no evaluated frames of subject {subject} recording {recording!r} in the chosen range")
    errors = evaluation.errors[protocol]
    cmax = float(max(np.ceil(np.percentile(errors[samples], 99) / 10) * 10, 10))
    per_frame = errors[samples].mean(axis=1)

    def title(i):
        return f"{subject} {recording}, frame {evaluation.frame_index[samples[i]]}: {protocol.upper()} {per_frame[i]:.1f} mm"

    first = samples[0]
    extent = fit_extent([evaluation.predictions[samples], evaluation.targets[samples]])
    fig = skeleton_figure(evaluation.predictions[first], evaluation.targets[first], errors[first], title(0),
                          cmax, extent)
    if pixels is not None:
        views = list(range(pixels.shape[1])) if views is None else list(views)
        fig = _beside_views(fig, pixels[first], views, subject, evaluation.rig)

    def frame_data(sample):  # dicts: go.Frame checks them once (trace objects made here were checked twice)
        data = [dict(type="scatter3d", **t) for t in skeleton_traces(
            evaluation.predictions[sample], evaluation.targets[sample], errors[sample], cmax)]
        return data + ([dict(type="scatter", **t) for t in _view_traces(pixels[sample])] if pixels is not None else [])

    fig.frames = [go.Frame(name=str(int(evaluation.frame_index[s])), layout=dict(title=dict(text=title(i))),
                           data=frame_data(s)) for i, s in enumerate(samples)]
    still = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    steps = [dict(method="animate", label=frame.name, args=[[frame.name], still]) for frame in fig.frames]
    play = dict(frame=dict(duration=1000 * step / fps, redraw=True), transition=dict(duration=0), fromcurrent=True)
    fig.update_layout(
        sliders=[dict(steps=steps, active=0, currentvalue=dict(prefix="frame "), pad=dict(t=30), x=0.1, len=0.9)],
        updatemenus=[dict(type="buttons", direction="left", x=0.1, y=0, xanchor="right", yanchor="top",
                          pad=dict(t=40, r=10), showactive=False,
                          buttons=[dict(label="Play", method="animate", args=[None, play]),
                                   dict(label="Pause", method="animate", args=[[None], still])])],
        height=650)
    return fig


def _view_traces(pixels) -> list:
    """One trace update per view: the bones of its 2D pose (V, J, 2) as a polyline with None gaps."""
    updates = []
    for view in np.asarray(pixels, dtype=float):
        x, y = [], []
        for child, parent in skeleton.BONES:
            x += [view[parent, 0], view[child, 0], None]
            y += [view[parent, 1], view[child, 1], None]
        updates.append(dict(x=x, y=y))
    return updates


def _beside_views(skeleton_fig: go.Figure, pixels, views, subject, rig=None) -> go.Figure:
    """`skeleton_fig`'s 3D scene on the left, each view's 2D input (pixels, image rows downwards) on
    the right, two per row; the 2D traces come after the 3D ones."""
    rows = -(-len(views) // 2)
    specs = [[{"type": "scene", "rowspan": rows}, {"type": "xy"}, {"type": "xy"}]]
    specs += [[None, {"type": "xy"}, {"type": "xy"}] for _ in range(rows - 1)]
    subject_cameras = cameras.cameras_for(subject, rig)
    titles = ["3D (mm)"] + [f"camera {subject_cameras[view].id}: input 2D" for view in views]
    fig = make_subplots(rows=rows, cols=3, specs=specs, column_widths=[0.5, 0.25, 0.25], subplot_titles=titles,
                        horizontal_spacing=0.04, vertical_spacing=0.16)
    for trace in skeleton_fig.data:
        fig.add_trace(trace, row=1, col=1)
    for index, (view, update) in enumerate(zip(views, _view_traces(pixels))):
        row, col = 1 + index // 2, 2 + index % 2
        fig.add_trace(go.Scatter(mode="lines", line=dict(color="#333333", width=2), showlegend=False,
                                 hoverinfo="skip", **update), row=row, col=col)
        camera = subject_cameras[view]
        fig.update_xaxes(range=[0, camera.res_w], title_text="x (px)", row=row, col=col)
        fig.update_yaxes(range=[camera.res_h, 0], title_text="y (px)", row=row, col=col)
    scene = {**skeleton_fig.layout.scene.to_plotly_json(), "domain": fig.layout.scene.domain.to_plotly_json()}
    fig.update_layout(title=skeleton_fig.layout.title, scene=scene, uirevision="keep",
                      margin=dict(l=0, r=0, t=60, b=0), legend=dict(x=0, y=1))
    return fig


def export_html(fig: go.Figure, path) -> Path:
    """Write `fig` as one standalone HTML file with plotly.js embedded (plays offline, no kernel),
    atomically. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temporary: fig.write_html(str(temporary), include_plotlyjs=True, full_html=True,
                                                        auto_play=False, config={"displaylogo": False}))
    return path


@torch.no_grad()
def attention_of(model, inputs) -> dict:
    """Attention maps of one sample: `inputs` (V, J, 2) normalised -> {"intra": [(1, V, H, J, J)]
    per block, "inter": [(1, H, V, V)] per block} as numpy arrays."""
    model.eval()
    parameter = next(model.parameters())
    batch = torch.as_tensor(np.asarray(inputs), dtype=parameter.dtype, device=parameter.device)[None]
    _, maps = model.forward_with_attention(batch)
    return {name: [m.float().cpu().numpy() for m in blocks] for name, blocks in maps.items()}


def _pick(maps, block, head, sample):
    array = np.mean(np.stack(maps), axis=0) if block == "mean" else np.asarray(maps[block])
    array = array[sample]  # intra (V, H, J, J), inter (H, V, V)
    head_axis = 1 if array.ndim == 4 else 0
    return array.mean(axis=head_axis) if head is None else np.take(array, head, axis=head_axis)


def attention_figure(attention: dict, block=-1, head=None, sample=0, title="Attention maps") -> go.Figure:
    """Heat maps of the intra-view (J x J, one per view) and inter-view (V x V) attention of one
    sample. `block`: a block index or "mean"; `head`: a head index or None for the mean over heads."""
    attention = {k: [m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else m for m in v]
                 for k, v in attention.items()}
    intra, inter = _pick(attention["intra"], block, head, sample), _pick(attention["inter"], block, head, sample)
    views = len(intra)
    cameras = [f"camera {v + 1}" for v in range(views)]
    cells = [(index // 3 + 1, index % 3 + 1) for index in range(views + 1)]
    rows = cells[-1][0]
    specs = [[{} if (row, col) in cells else None for col in (1, 2, 3)] for row in range(1, rows + 1)]
    fig = make_subplots(rows=rows, cols=3, specs=specs, horizontal_spacing=0.09, vertical_spacing=0.14,
                        subplot_titles=[f"intra-view, {c}" for c in cameras] + ["inter-view"])
    names = list(skeleton.JOINT_NAMES)
    for view in range(views):
        fig.add_trace(go.Heatmap(z=intra[view], x=names, y=names, coloraxis="coloraxis",
                                 hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"),
                      *cells[view])
    fig.add_trace(go.Heatmap(z=inter, x=cameras, y=cameras, coloraxis="coloraxis2",
                             hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"), *cells[-1])
    for row, col in cells:
        fig.update_xaxes(title_text="attended (key)", tickfont=dict(size=8), row=row, col=col)
        fig.update_yaxes(title_text="attending (query)", autorange="reversed", tickfont=dict(size=8),
                         row=row, col=col)
    which = "mean over heads" if head is None else f"head {head}"
    block_name = "mean over blocks" if block == "mean" else ("last block" if block == -1 else f"block {block}")
    fig.update_layout(
        title=dict(text=f"{title}: {block_name}, {which}"), height=400 * rows,
        coloraxis=dict(colorscale="Blues", cmin=0, cmax=float(intra.max()),
                       colorbar=dict(title=dict(text="intra weight"), y=0.78, len=0.45)),
        coloraxis2=dict(colorscale="Oranges", cmin=0, cmax=float(inter.max()),
                        colorbar=dict(title=dict(text="inter weight"), y=0.22, len=0.45)))
    return fig
