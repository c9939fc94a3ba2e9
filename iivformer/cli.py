"""The `iivformer` command: a thin layer over the same functions the notebooks call.

    iivformer synth    --out data/synthetic/small --preset tiny|small|full --seed 0 [--detector_noise PX]
    iivformer check    --data_3d F --data_2d F
    iivformer train    --data_3d F --data_2d F --batch_size 1024 --epochs 100 --lr 0.0004 --seed 42 ...
    iivformer evaluate --data_3d F --data_2d F --subjects '["S9", "S11"]' --model_path cpn.pth --protocol p1|p2|both
    iivformer export   --model_path CKPT --out FILE

The training and evaluation flags are those of the published main.py and evaluate.py.
Bad input ends with one line `error: ...` on stderr and a non-zero exit status.
"""
import argparse
import json
import sys
from pathlib import Path

from iivformer import skeleton
from iivformer.errors import IIVFormerError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"error: {self.prog}: {message}\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text):
    value = _positive_float(text) if text.strip() not in ("0", "0.0") else 0.0
    return value


def _archives(args) -> tuple:
    """The archive pair from the flags, or the default one found in data/."""
    from iivformer import data

    if args.data_3d and args.data_2d:
        return args.data_3d, args.data_2d
    if args.data_3d or args.data_2d:
        raise IIVFormerError("give both --data_3d and --data_2d, or neither to use the archives in data/")
    found = data.find_archives("data")
    if found is None:
        raise IIVFormerError("no archives in data/: link the Human3.6M archives there (see data/README.md) "
                             "or make the synthetic default with `iivformer synth`")
    print(f"using the {found[2]} archives {found[0]} and {found[1]}", file=sys.stderr)
    return found[0], found[1]


def _add_data_flags(parser):
    parser.add_argument("--data_3d", help="3D archive (VideoPose3D format); default: found in data/")
    parser.add_argument("--data_2d", help="2D archive (VideoPose3D format); default: found in data/")


def cmd_synth(args):
    from iivformer import data, synthetic

    options = {} if args.detector_noise is None else {"detector_noise": args.detector_noise}
    out = args.out or Path("data") / data.SYNTHETIC_FOLDER / args.preset
    path_3d, path_2d = synthetic.write_dataset(out, preset=args.preset, seed=args.seed, **options)
    print(f"wrote {path_3d}\nwrote {path_2d}")
    print(data.load_archives(path_3d, path_2d).describe())


def cmd_check(args):
    from iivformer import data

    path_3d, path_2d = _archives(args)
    print(data.load_archives(path_3d, path_2d).describe())
    print("ok")


def cmd_train(args):
    from iivformer import data, train
    from iivformer.model import ModelConfig

    val_subjects = tuple(args.val_subjects.split(",")) if args.val_subjects else ()
    unknown = [s for s in val_subjects if s not in skeleton.TRAIN_SUBJECTS]
    if unknown:
        raise IIVFormerError(f"--val_subjects: {', '.join(unknown)} not among the training subjects "
                             f"{', '.join(skeleton.TRAIN_SUBJECTS)}")
    config = train.TrainConfig(
        batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, seed=args.seed, device=args.device,
        model=ModelConfig(embed_dim_ratio=args.embed_dim_ratio, depth=args.depth, num_heads=args.num_heads),
        select_on="val" if val_subjects else "test")
    train.check_output_paths(args.model_path, args.log)
    path_3d, path_2d = _archives(args)
    train_subjects = tuple(s for s in skeleton.TRAIN_SUBJECTS if s not in val_subjects)
    prepared = data.prepare(path_3d, path_2d, train_subjects=train_subjects, val_subjects=val_subjects)
    history = train.train(config, prepared, checkpoint_path=args.model_path, log_path=args.log,
                          resume=args.resume)
    best = min(history, key=lambda record: record.get(f"{config.select_on}_mpjpe", float("inf")))
    print(f"best epoch {best['epoch']}: test MPJPE {best['test_mpjpe']:.2f} mm; checkpoint {args.model_path}")


def cmd_evaluate(args):
    from iivformer import evaluate

    subjects = evaluate.parse_subjects(args.subjects)
    protocols = evaluate.PROTOCOLS if args.protocol == "both" else (args.protocol,)
    if args.json:
        _check_writable(args.json, "--json")
    path_3d, path_2d = _archives(args)
    result = evaluate.evaluate_checkpoint(args.model_path, path_3d, path_2d, subjects, device=args.device)
    results = result.results(protocols)
    print(evaluate.format_table(results))
    for protocol in protocols:
        print(f"{protocol}: mean over {len(results[protocol]) - 1} actions {results[protocol]['mean']:.2f} mm")
    if args.json:
        from iivformer.data import atomic_write

        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1) + "\n"))
        print(f"wrote {args.json}")


def cmd_export(args):
    from iivformer.checkpoint import export_state_dict

    _check_writable(args.out, "--out")
    export_state_dict(args.model_path, args.out)
    print(f"wrote {args.out}")


def _check_writable(path, flag):
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise IIVFormerError(f"{flag} {path}: the folder {folder} does not exist")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="iivformer", description="IIVFormer workbench: multi-view 2D-to-3D human pose lifting")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    synth = commands.add_parser("synth", help="make the synthetic Human3.6M-format dataset")
    synth.add_argument("--out", help="output folder (default: data/synthetic/<preset>)")
    synth.add_argument("--preset", choices=["tiny", "small", "full"], default="small")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--detector_noise", type=_non_negative_float, default=None,
                       help="2D detector error in pixels (0: exact projections)")
    synth.set_defaults(run=cmd_synth)

    check = commands.add_parser("check", help="validate a pair of archives and summarise them")
    _add_data_flags(check)
    check.set_defaults(run=cmd_check)

    fit = commands.add_parser("train", help="train IIVFormer (flags of the published main.py)")
    _add_data_flags(fit)
    fit.add_argument("--batch_size", type=_positive_int, default=1024)
    fit.add_argument("--epochs", type=_positive_int, default=100)
    fit.add_argument("--lr", type=_positive_float, default=0.0004)
    fit.add_argument("--seed", type=int, default=42)
    fit.add_argument("--model_path", default="cpn.pth", help="checkpoint to write (default: cpn.pth)")
    fit.add_argument("--log", default="cpn.log", help="training log (default: cpn.log)")
    fit.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    fit.add_argument("--resume", action="store_true", help="continue from the checkpoint at --model_path")
    fit.add_argument("--val_subjects", help="pick the best epoch on these training subjects (e.g. S8) "
                                            "instead of the test subjects")
    fit.add_argument("--embed_dim_ratio", type=_positive_int, default=32)
    fit.add_argument("--depth", type=_positive_int, default=4)
    fit.add_argument("--num_heads", type=_positive_int, default=8)
    fit.set_defaults(run=cmd_train)

    test = commands.add_parser("evaluate", help="Protocol 1/2 per action (flags of the published evaluate.py)")
    _add_data_flags(test)
    test.add_argument("--subjects", default='["S9", "S11"]')
    test.add_argument("--model_path", default="cpn.pth")
    test.add_argument("--protocol", choices=["p1", "p2", "both"], default="p1")
    test.add_argument("--seed", type=int, default=42, help="accepted for compatibility; evaluation is deterministic")
    test.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    test.add_argument("--json", help="also write the per-action results to this JSON file")
    test.set_defaults(run=cmd_evaluate)

    export = commands.add_parser("export", help="write a checkpoint's best weights as a plain state dict")
    export.add_argument("--model_path", required=True)
    export.add_argument("--out", required=True)
    export.set_defaults(run=cmd_export)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except IIVFormerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 130 if type(error).__name__ == "TrainingInterrupted" else 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
