"""An ipywidgets explorer of evaluated frames: pick a subject, action, recording and frame (or jump to
the worst frames of an action) and see the 3D prediction against the ground truth, the four 2D
input views, the per-frame errors and, with a model, the attention maps of that frame.

The state lives in plain attributes and :meth:`Explorer.select` changes it, so everything but the
drawing in the browser can be tested without a kernel. Matplotlib views and attention maps are
only drawn once the widget is shown.
"""
import io

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from IPython.display import Image, clear_output, display
from matplotlib.figure import Figure

from iivformer import cameras as camera_module
from iivformer import skeleton
from iivformer.errors import IIVFormerError
from iivformer.viz import figures, viewer


def _displayable(figure):
    """A matplotlib figure as a PNG image (shown whatever the notebook's matplotlib backend);
    anything else (plotly figures) as it is."""
    if isinstance(figure, Figure):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        return Image(data=buffer.getvalue(), format="png")
    return figure


def _figure_widget(fig: go.Figure):
    """A plotly FigureWidget (updated in place in the browser) when plotly can make one (it needs
    the anywidget package), else None: the explorer then redraws a static figure."""
    try:
        return go.FigureWidget(fig)
    except Exception:  # noqa: BLE001 - ImportError or plotly's own error when anywidget is missing
        return None


class Explorer:
    """Browse an :class:`~iivformer.evaluate.Evaluation` of ``prepared.<split>`` (same samples,
    same order, as ``evaluate_split`` makes it)."""

    def __init__(self, evaluation, prepared, model=None, split="test", protocol="p1", worst_count=10):
        self.evaluation, self.model, self.protocol = evaluation, model, protocol
        self.split, self.normalization = getattr(prepared, split), prepared.normalization
        self.rig = getattr(prepared, "rig", None)
        if len(self.split) != len(evaluation):
            raise IIVFormerError(f"the evaluation has {len(evaluation)} samples but the {split} split "
                                 f"{len(self.split)}")
        self.worst_count = worst_count
        order = np.lexsort((evaluation.frame_index, evaluation.recordings, evaluation.subjects))
        subjects, recordings = evaluation.subjects[order], evaluation.recordings[order]
        starts = np.flatnonzero(np.r_[True, (subjects[1:] != subjects[:-1]) | (recordings[1:] != recordings[:-1])])
        # (subject, recording) -> sample indices in frame order
        groups = sorted(zip(starts, np.r_[starts[1:], len(order)]), key=lambda span: order[span[0]:span[1]].min())
        self.frames_of = {(str(subjects[a]), str(recordings[a])): order[a:b] for a, b in groups}  # evaluation order
        self.cmax = float(max(np.ceil(np.percentile(evaluation.errors[protocol], 99) / 10) * 10, 10))
        self.subject, self.recording = next(iter(self.frames_of))
        self.position, self.sample = 0, int(self.frames_of[(self.subject, self.recording)][0])
        extent = viewer.fit_extent([evaluation.predictions, evaluation.targets], quantile=99.9)  # fixed view
        self.figure = viewer.skeleton_figure(evaluation.predictions[self.sample], evaluation.targets[self.sample],
                                             evaluation.errors[protocol][self.sample], cmax=self.cmax, extent=extent)
        self._widget, self._figure_widget, self._shown, self._busy = None, None, False, False
        self._build_controls()
        self.select(self.subject, self.recording, 0)

    # ----------------------------------------------------------------------------------- state
    def _recordings_of(self, subject, action=None) -> list:
        return [recording for s, recording in self.frames_of
                if s == subject and (action is None or skeleton.action_of(recording) == action)]

    def _actions(self, subject) -> list:
        present = {skeleton.action_of(recording) for recording in self._recordings_of(subject)}
        return [a for a in skeleton.ACTIONS if a in present] + sorted(present - set(skeleton.ACTIONS))

    def select(self, subject: str, recording: str, frame: int = 0) -> int:
        """Show frame number `frame` of recording (`subject`, `recording`); returns the sample index."""
        if (subject, recording) not in self.frames_of:
            raise IIVFormerError(f"no evaluated recording {recording!r} of subject {subject}")
        samples = self.frames_of[(subject, recording)]
        frames = self.evaluation.frame_index[samples]
        position = int(np.clip(np.searchsorted(frames, frame), 0, len(samples) - 1))
        self.subject, self.recording, self.position, self.sample = subject, recording, position, int(samples[position])
        self._sync_controls()
        self._draw()
        return self.sample

    def select_sample(self, sample: int) -> int:
        """Show one sample (an index into the evaluation)."""
        ev = self.evaluation
        return self.select(ev.subjects[sample], ev.recordings[sample], int(ev.frame_index[sample]))

    def worst_frames(self, action=None) -> np.ndarray:
        """Sample indices of the worst frames of `action` (default: the shown one), worst first."""
        return self.evaluation.worst_frames(action or skeleton.action_of(self.recording), self.worst_count, self.protocol)

    def show_worst(self, action=None, rank: int = 0) -> int:
        """Jump to the `rank`-th worst frame of `action`; fills the worst-frames list. Returns the sample."""
        worst = self.worst_frames(action)
        ev, errors = self.evaluation, self.evaluation.per_frame(self.protocol)
        self._busy = True
        try:
            self.worst.options = [(f"{ev.subjects[s]} {ev.recordings[s]} frame {ev.frame_index[s]}: {errors[s]:.1f} mm",
                                   int(s)) for s in worst]
            self.worst.value = int(worst[rank])
        finally:
            self._busy = False
        return self.select_sample(int(worst[rank]))

    # -------------------------------------------------------------------------------- drawing
    def frame_errors(self) -> dict:
        """{"p1": mm, "p2": mm} of the shown frame (mean over joints)."""
        return {p: float(e[self.sample].mean()) for p, e in self.evaluation.errors.items()}

    def views_figure(self):
        """The 4 input views of the shown frame in pixels (matplotlib)."""
        pixels = self.normalization.invert(self.split.inputs[self.sample])
        try:
            cams = camera_module.cameras_for(self.subject, self.rig)
        except IIVFormerError:
            cams = None
        return figures.plot_views_2d(pixels, cams, title=f"2D input of the {len(pixels)} cameras", columns=2)

    def attention_figure(self, block=-1, head=None):
        """The attention maps of the shown frame (needs the model)."""
        if self.model is None:
            raise IIVFormerError("the explorer was made without a model: pass model=... to see attention")
        attention = viewer.attention_of(self.model, self.split.inputs[self.sample])
        frame = self.evaluation.frame_index[self.sample]
        title = f"Attention of {self.subject} {self.recording} frame {frame}"
        return viewer.attention_figure(attention, block, head, title=title)

    def _draw(self) -> None:
        ev, s = self.evaluation, self.sample
        updates = viewer.skeleton_traces(ev.predictions[s], ev.targets[s], ev.errors[self.protocol][s], self.cmax)
        errors = self.frame_errors()
        title = f"{self.subject} {self.recording}, frame {ev.frame_index[s]}"
        for fig in [self.figure] + ([self._figure_widget] if self._shown and self._figure_widget else []):
            with fig.batch_update():
                for trace, update in zip(fig.data, updates):
                    trace.update(update)
                fig.layout.title.text = title
        self.info.value = (f"<b>{title}</b> ({self.position + 1} of {len(self.frames_of[(self.subject, self.recording)])}): "
                           + ", ".join(f"{p.upper()} {value:.1f} mm" for p, value in errors.items()))
        if self._shown and figures._in_notebook():  # outside IPython there is nowhere to draw
            outputs = [(self._views_output, self.views_figure)]
            if self._figure_widget is None:
                outputs.append((self._figure_output, lambda: self.figure))
            if self.model is not None:
                outputs.append((self._attention_output, self.attention_figure))
            for output, make in outputs:
                with output:
                    clear_output(wait=True)
                    display(_displayable(make()))

    # ------------------------------------------------------------------------------- widgets
    def _build_controls(self) -> None:
        subjects = list(dict.fromkeys(subject for subject, _ in self.frames_of))
        self.subject_menu = widgets.Dropdown(options=subjects, description="subject")
        self.action_menu = widgets.Dropdown(description="action")
        self.recording_menu = widgets.Dropdown(description="recording")
        self.slider = widgets.IntSlider(min=0, description="frame", continuous_update=True,
                                        layout=widgets.Layout(width="500px"))
        self.play = widgets.Play(interval=100, step=1)
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.worst_button = widgets.Button(description="worst frames", icon="exclamation-triangle",
                                           tooltip="jump to the worst frames of the chosen action")
        self.worst = widgets.Dropdown(description="worst", layout=widgets.Layout(width="420px"))
        self.info = widgets.HTML()
        self.subject_menu.observe(lambda change: self._on_menu("subject"), names="value")
        self.action_menu.observe(lambda change: self._on_menu("action"), names="value")
        self.recording_menu.observe(lambda change: self._on_menu("recording"), names="value")
        self.slider.observe(self._on_slider, names="value")
        self.worst_button.on_click(lambda button: self.show_worst(self.action_menu.value))
        self.worst.observe(self._on_worst, names="value")

    def _sync_controls(self) -> None:
        self._busy = True
        try:
            self.subject_menu.value = self.subject
            self.action_menu.options = self._actions(self.subject)
            self.action_menu.value = skeleton.action_of(self.recording)
            self.recording_menu.options = self._recordings_of(self.subject, self.action_menu.value)
            self.recording_menu.value = self.recording
            last = len(self.frames_of[(self.subject, self.recording)]) - 1
            self.slider.max = self.play.max = last
            self.slider.value = self.position
        finally:
            self._busy = False

    def _on_menu(self, which) -> None:
        if self._busy:
            return
        subject, recording = self.subject_menu.value, self.recording_menu.value
        if which != "recording":
            action = self.action_menu.value if which == "action" else None
            recordings = self._recordings_of(subject, action) or self._recordings_of(subject)
            recording = recordings[0]
        self.select(subject, recording, 0)

    def _on_worst(self, change) -> None:
        if not self._busy and change["new"] is not None:
            self.select_sample(change["new"])

    def _on_slider(self, change) -> None:
        if not self._busy:
            samples = self.frames_of[(self.subject, self.recording)]
            self.select(self.subject, self.recording, int(self.evaluation.frame_index[samples[change["new"]]]))

    def show(self) -> widgets.Widget:
        """The explorer's widget box (display it, or make it a cell's last value)."""
        if self._widget is None:
            self._figure_widget = _figure_widget(self.figure)
            self._figure_output = widgets.Output(layout=widgets.Layout(width="58%"))
            self._views_output = widgets.Output(layout=widgets.Layout(width="42%"))
            self._attention_output = widgets.Output()
            view3d = self._figure_widget if self._figure_widget is not None else self._figure_output
            rows = [widgets.HBox([self.subject_menu, self.action_menu, self.recording_menu]),
                    widgets.HBox([self.play, self.slider]), widgets.HBox([self.worst_button, self.worst]), self.info,
                    widgets.HBox([view3d, self._views_output])]
            if self.model is not None:
                rows.append(self._attention_output)
            self._widget = widgets.VBox(rows)
            self._shown = True
            self._draw()
        return self._widget
