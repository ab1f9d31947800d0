"""`megatron-retro tasks list|check`: the supported QA tasks, and a full validation pass
over a user's task file (every record read; the first bad one reported with file and line)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    tasks = subparsers.add_parser("tasks", help="QA task files: list formats, validate a file")
    sub = tasks.add_subparsers(dest="tasks_command", required=True, metavar="<action>")
    p = sub.add_parser("list", help="supported task names and file layouts",
                       description=list_tasks.__doc__)
    p.set_defaults(handler=list_tasks)
    p = sub.add_parser("check", help="read a whole task file and summarise it",
                       description=check.__doc__)
    p.add_argument("--task", default="bundled", help="task name (see `tasks list`)")
    p.add_argument("--path", required=True, help="task file, or a directory with --split")
    p.add_argument("--split", default=None, help="train, valid (dev/val) or test")
    p.add_argument("--context", default=None,
                   help="narrativeqa only: summary (default) or text")
    p.set_defaults(handler=check)


def list_tasks(args: argparse.Namespace) -> int:
    """Print each task name with the file layout it reads (default: bundled)."""
    from megatron_retro.data.tasks import TASKS

    for name, spec in sorted(TASKS.items()):
        print(f"{name:<12} {spec.layout}")
    return 0


def check(args: argparse.Namespace) -> int:
    """Read every record of a task file (UserError on the first bad one, naming file, line
    and field) and print counts and the first example."""
    from megatron_retro.data.tasks import load_task, resolve_task_file

    options = {"context": args.context} if args.context else {}
    file = resolve_task_file(args.task, args.path, args.split)
    n = n_ctx = n_opt = n_answers = 0
    first = None
    for ex in load_task(args.task, args.path, args.split, **options):
        first = first or ex
        n += 1
        n_ctx += ex.context is not None
        n_opt += ex.options is not None
        n_answers += len(ex.answers)
    if n == 0:
        from megatron_retro.errors import UserError

        raise UserError(f"{file}: no examples (an empty {args.task} task file)")
    print(f"file:      {file}")
    print(f"examples:  {n} ({n_ctx} with context, {n_opt} multiple-choice, "
          f"{n_answers / max(n, 1):.2f} gold answers each on average)")
    if first is not None:
        print(f"first:     id={first.id} question={first.question!r} answers={first.answers!r}")
    return 0
