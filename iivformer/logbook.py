"""The training log: a plain-text file, one line per event, appended to across resumed runs."""
import logging
import sys
from pathlib import Path

from tqdm.auto import tqdm

from iivformer import runtime
from iivformer.errors import IIVFormerError


class _LogFile(logging.FileHandler):
    """A log file that, when it cannot be written (a full disk), says so once and stops trying."""

    failed = False

    def emit(self, record):
        if not self.failed:
            super().emit(record)

    def handleError(self, record):
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            print(f"warning: cannot write the log {self.baseFilename}: {getattr(error, 'strerror', None) or error}; "
                  "training goes on without it", file=sys.stderr)


class TrainingLog:
    """Writes the log of one training run; a context manager that closes the file at the end.
    With `echo`, epoch lines also go to the terminal (above the progress bar)."""

    def __init__(self, path, echo: bool = True):
        self.path, self.echo = Path(path), echo
        self.logger = logging.Logger("iivformer.train")  # its own logger: not the root logger
        try:
            handler = _LogFile(self.path, mode="a", encoding="utf-8")
        except OSError as error:
            raise IIVFormerError(f"log {self.path}: cannot open ({error.strerror})") from None
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        self.logger.addHandler(handler)
        self.logger.setLevel(logging.INFO)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)

    def info(self, text: str) -> None:
        self.logger.info(text)

    def header(self, config, device, prepared, checkpoint_path, saved) -> None:
        """What this run is: device, versions, configuration, data, selection, checkpoint."""
        versions = runtime.versions()
        self.info("=== IIVFormer training ===")
        self.info(f"device: {runtime.describe_device(device)}")
        self.info("versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
        self.info(f"config: {config.to_dict()}")
        sizes = f"{len(prepared.train)} train samples ({', '.join(prepared.train_subjects)}), " \
                f"{len(prepared.test)} test samples ({', '.join(prepared.test_subjects)})"
        if prepared.val is not None and len(prepared.val):
            sizes += f", {len(prepared.val)} validation samples ({', '.join(prepared.val_subjects)})"
        self.info(f"data: {sizes}")
        if config.select_on == "test":
            self.info("best epoch selected on: test MPJPE (the test subjects, as in the published recipe)")
        else:
            self.info(f"best epoch selected on: val MPJPE (held-out training subjects "
                      f"{', '.join(prepared.val_subjects)})")
        self.info(f"checkpoint: {checkpoint_path}")
        if saved is not None:
            self.info(f"resuming after epoch {saved['last']['epoch']} (best epoch {saved['best_epoch']}, "
                      f"{saved['best_metric']:.2f} mm)")

    def epoch(self, record: dict, config, checkpoint_path, improved: bool) -> None:
        """One line per epoch (errors, time, speed), and a line when the best model changed."""
        text = f"epoch {record['epoch']}/{config.epochs}: train MPJPE {record['train_mpjpe']:.2f} mm, " \
               f"test MPJPE {record['test_mpjpe']:.2f} mm"
        if "val_mpjpe" in record:
            text += f", val MPJPE {record['val_mpjpe']:.2f} mm"
        text += f", {record['seconds']:.1f} s, {record['samples_per_second']:.0f} samples/s"
        self.info(text)
        if improved:
            self.info(f"save best model: epoch {record['epoch']}, {config.select_on} MPJPE "
                      f"{record['best_metric']:.2f} mm -> {checkpoint_path}")
        if self.echo:
            tqdm.write(text + (" (best)" if improved else ""))
