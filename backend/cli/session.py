"""``session create|click|remove|retrain|predict|undo|status|export``: an interactive session,
headless (what the QGIS plugin drives)."""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import UserError
from .options import add_device, add_disca_options, add_patch_score, add_pixel_size, disca_settings
from .terminal import monitor, print_report

NAME = "session"
HELP = "an interactive session, headless (what the plugin drives)"
READ_ONLY_ACTIONS = ("status", "export")
"""Session actions that only read the session: they take no lock and never change its files."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..predict.uncertainty import ACQUISITIONS

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="start a session on a raster with a model")
    create.add_argument("session", type=Path, help="session GeoPackage to create")
    create.add_argument("--raster", required=True, type=Path)
    create.add_argument("--model", type=Path, help="model bundle (or --sial --classes)")
    create.add_argument(
        "--classes",
        help="with --sial, instead of --model: an untrained network for these classes "
        "(comma-separated, name or name:#rrggbb), written beside the session as SESSION-model/",
    )
    create.add_argument(
        "--sial",
        action="store_true",
        help="train the model from the clicks alone (SIAL rounds: cross-entropy, SLIC superpixels)",
    )
    create.add_argument(
        "--adjust-prior",
        action="store_true",
        help="with --sial: after each round, correct the model for the class shares of the clicks",
    )
    add_pixel_size(create)
    create.add_argument(
        "--adapt-statistics",
        action="store_true",
        help="with --model: first re-estimate its BatchNorm statistics on the raster (AdaBN), into a "
        "copy of the bundle written beside the session as SESSION-model/",
    )
    create.add_argument(
        "--starting-weights",
        type=Path,
        help="continue from another session's checkpoint or bundle (sequential adaptation)",
    )
    for name, text in (("status", "clicks, iterations, checkpoints"), ("undo", "revert the last action")):
        actions.add_parser(name, help=text).add_argument("session", type=Path)
    click = actions.add_parser("click", help="add a click (pixel row/col or map x/y in the raster's CRS)")
    click.add_argument("session", type=Path)
    click.add_argument("--class", dest="class_name", required=True, help="class name or index")
    where = click.add_mutually_exclusive_group(required=True)
    where.add_argument("--pixel", nargs=2, type=int, metavar=("ROW", "COL"))
    where.add_argument("--xy", nargs=2, type=float, metavar=("X", "Y"))
    remove = actions.add_parser("remove", help="remove a click by id")
    remove.add_argument("session", type=Path)
    remove.add_argument("click_id", type=int)
    retrain = actions.add_parser("retrain", help="one retraining round on all clicks")
    retrain.add_argument("session", type=Path)
    add_disca_options(retrain)
    predict = actions.add_parser("predict", help="update the maps (only touched tiles when possible)")
    predict.add_argument("session", type=Path)
    predict.add_argument("--acquisition", choices=ACQUISITIONS, default="entropy")
    add_patch_score(predict, "mean", "mean")
    export = actions.add_parser("export", help="write the adapted model as a bundle")
    export.add_argument("session", type=Path)
    export.add_argument("--out", required=True, type=Path)
    for sub in actions.choices.values():
        add_device(sub)


def run(args: argparse.Namespace) -> int:
    from ..session.session import Session

    if args.action == "create":
        return _create(args)
    session = Session.open(args.session, args.device, writer=args.action not in READ_ONLY_ACTIONS)
    try:
        for notice in session.notices:
            print(f"note: {notice}", file=sys.stderr)
        ACTIONS[args.action](session, args)
    finally:
        session.close()
    return 0


def _create(args: argparse.Namespace) -> int:
    from ..session.session import Session
    from ..session.settings import SialSettings

    if args.adjust_prior and not args.sial:
        raise UserError("--adjust-prior corrects SIAL rounds: it needs --sial")
    if args.adapt_statistics and (args.classes is not None or args.model is None):
        raise UserError("--adapt-statistics adapts a trained model: use it with --model")
    made_model = args.classes is not None
    if args.classes is not None:
        from ..learn.new_model import create_model_for_raster, parse_classes

        if not args.sial or args.model is not None:
            raise UserError("--classes makes a network to learn from clicks: use it with --sial, not --model")
        if args.session.exists():
            raise UserError(f"{args.session} already exists")
        classes = parse_classes(args.classes)
        args.model = create_model_for_raster(
            args.raster, classes, args.session.with_name(f"{args.session.stem}-model")
        )
    elif args.model is None:
        raise UserError("a session needs --model (or --sial --classes for a network learnt from clicks)")
    elif args.adapt_statistics:
        from ..learn.adabn import adapted_bundle

        if args.session.exists():
            raise UserError(f"{args.session} already exists")
        args.model = adapted_bundle(
            args.model, args.raster, args.session.with_name(f"{args.session.stem}-model"), args.pixel_size
        )
        made_model = True
    settings = SialSettings.recommended() if args.sial else None
    if settings is not None and args.adjust_prior:
        settings = replace(settings, training=replace(settings.training, adjust_prior=True))
    try:
        session = Session.create(
            args.session,
            args.raster,
            args.model,
            args.device,
            args.starting_weights,
            settings,
            pixel_size=args.pixel_size,
        )
    except BaseException:
        if made_model:  # the network made for this session: no session uses it
            shutil.rmtree(args.model, ignore_errors=True)
        raise
    size = f"{session.info.width} × {session.info.height} px"
    print(f"created {args.session} ({size}, model {session.bundle.card.name})")
    session.close()
    return 0


def _status(session: Any, args: argparse.Namespace) -> None:
    for it in session.iterations():
        current = " (current model)" if it.iteration == session.current.iteration else ""
        print(
            f"iteration {it.iteration}: {it.kind}, {it.clicks} clicks, "
            f"checkpoint {it.checkpoint or '-'}{' (pruned)' if it.pruned else ''}, "
            f"mIoU {it.miou if it.miou is not None else '-'}{current}"
        )
    for c in session.clicks():
        print(f"click {c.click_id}: ({c.row}, {c.col}) {c.class_name}, iteration {c.iteration}, {c.source}")


def _click(session: Any, args: argparse.Namespace) -> None:
    card = session.bundle.card
    class_id = int(args.class_name) if args.class_name.isdigit() else card.class_index(args.class_name)
    if class_id is None:
        raise UserError(f"unknown class '{args.class_name}' ({', '.join(c.name for c in card.classes)})")
    if args.pixel:
        stored = session.add_click(args.pixel[0], args.pixel[1], class_id)
    else:
        stored = session.add_click_at(args.xy[0], args.xy[1], class_id)
    print(f"click {stored.click_id} at pixel ({stored.row}, {stored.col}): {stored.class_name}")


def _remove(session: Any, args: argparse.Namespace) -> None:
    session.remove_click(args.click_id)
    print(f"removed click {args.click_id}")


def _retrain(session: Any, args: argparse.Namespace) -> None:
    from ..predict.held_classes import held_message

    settings = disca_settings(args, session.settings) if session.settings.KIND == "disca" else None
    report = session.retrain(settings, monitor(args.action, args))
    if not report.kept:
        print(f"round not kept: {report.verdict.reason}")
        return
    if report.verdict is not None and report.verdict.warning:
        print(f"warning: {report.verdict.warning}", file=sys.stderr)
    print(
        f"round {session.iteration}: {report.steps} steps on {report.crops} crops, {report.clicks} clicks, "
        f"{report.seconds:.1f} s, loss {report.losses[0]:.3f} → {report.losses[-1]:.3f}"
    )
    held = held_message(session.held_classes(), [c.name for c in session.bundle.card.classes])
    if held:
        print(held)


ACTIONS = {
    "status": _status,
    "click": _click,
    "remove": _remove,
    "undo": lambda session, args: print(session.undo()),
    "retrain": _retrain,
    "predict": lambda session, args: print_report(
        session.predict(args.acquisition, monitor(args.action, args), patch_score=args.patch_score)
    ),
    "export": lambda session, args: print(f"wrote {session.export_bundle(args.out)}"),
}
