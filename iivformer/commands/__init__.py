"""The `iivformer` command's subcommands, in modules by what they work on; :mod:`iivformer.cli`
assembles them into one parser.

- :mod:`~iivformer.commands.data`: synth, import-bvh, rig, check (archives and camera rigs).
- :mod:`~iivformer.commands.models`: train, evaluate, predict, export (checkpoints).
- :mod:`~iivformer.commands.flags`: the value types and flags they share.
"""
