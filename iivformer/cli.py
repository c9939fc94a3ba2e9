"""The `iivformer` command: a thin layer over the same functions the notebooks call.

    iivformer synth    --out data/synthetic/small --preset tiny|small|full --seed 0 [--detector_noise PX] [--rig R]
    iivformer import-bvh FILE... --out DIR [--rig R | --subject S9] [--action NAME[,NAME...]] [--mapping F]
                       [--units auto|m|cm|mm|in] [--up y|z] [--detector_noise PX] [--seed N]
    iivformer rig      RIG [--out rig.json] [--units mm|cm|m|in] [--up auto|+z|-y|...]
    iivformer check    --data_3d F --data_2d F
    iivformer train    --data_3d F --data_2d F [--profile ci|default|paper] --batch_size N --epochs N --lr X ...
                       [--precision fp32|bf16] [--compile]
    torchrun --nproc_per_node N -m iivformer train ...    (N processes, one model: see iivformer.train)
    iivformer evaluate --data_3d F --data_2d F --subjects '["S9", "S11"]' --model_path cpn.pth --protocol p1|p2|both
                       [--precision fp32|bf16] [--compile]
    iivformer predict  --model_path CKPT --keypoints FILE --out FILE [--format h36m17|coco17] [--rig FILE]
    iivformer export   --model_path CKPT --out FILE [--format state_dict|torchscript|onnx]
    iivformer cite

The training and evaluation flags are those of the published main.py and evaluate.py; their
defaults are the published recipe (iivformer.config), and --profile starts from a profile instead.
Bad input ends with one line `error: ...` on stderr and a non-zero exit status.

This module assembles the parser and turns errors into exit statuses; the subcommands are in
:mod:`iivformer.commands`: :mod:`~iivformer.commands.data` (synth, import-bvh, rig, check),
:mod:`~iivformer.commands.models` (train, evaluate, predict, export) and the flags they share,
:mod:`~iivformer.commands.flags`.
"""
import argparse
import os
import sys

from iivformer import distributed, provenance, runtime
from iivformer.commands import data, flags, models
from iivformer.errors import IIVFormerError, printable


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"error: {self.prog}: {message}\n")


def cmd_cite(args):
    print(provenance.BIBTEX)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="iivformer", description="IIVFormer workbench: multi-view 2D-to-3D human pose lifting")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    data.add_commands(commands)
    models.add_commands(commands)
    cite = commands.add_parser("cite", help="print the BibTeX entry of the IIVFormer paper")
    cite.set_defaults(run=cmd_cite)
    return parser


def main(argv=None) -> int:
    runtime.start_workers_flushing_denormals()  # before any parallel work (runtime explains)
    args = build_parser().parse_args(argv)
    try:
        flags.apply_limits(args)
        args.run(args)
    except IIVFormerError as error:
        if distributed.rank() == 0 or isinstance(error, distributed.DistributedError):  # the same on every rank
            print(f"error: {printable(error)}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        if distributed.rank() == 0:
            print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the output's reader went away (`iivformer cite | head -1`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
