"""The ``shepherd`` command.

    shepherd up [-c FILE]            gateway, notifier and every configured sheep, one process
    shepherd gateway [-c FILE]       the HTTP API and the upload listener
    shepherd notifier [-c FILE]      the status writer
    shepherd sheep ID [-c FILE]      one named sheep
    shepherd sheep --class NAME [-c FILE]
                                     one sheep of a class, with an id made as it starts
    shepherd token --scopes read,submit --name ci
                                     mint a gateway token: prints it once, and its config entry
    shepherd image runner [--registry HOST:PORT] [--no-push]
                                     build the runner image (and its base) and push it
    shepherd image services [--registry HOST:PORT] [--no-push]
                                     build the image of the services (deploy/compose/,
                                     deploy/kubernetes/) and push it
    shepherd image model DIR NAME:VERSION [--registry HOST:PORT] [--no-push]
                                     build the model image <registry>/NAME:VERSION from DIR
                                     and push it; the registry defaults to registry.url

Without ``-c``, ``examples/configs/shepherd-bare.yml`` is used when it exists here (its
defaults match ``make services``), else the built-in defaults.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import get_args

import uvloop
import yaml
from pydantic import SecretStr, ValidationError

from schemas.config import Config, Scope, TokenConfig
from schemas.config_file import ConfigError, load_config
from schemas.errors import format_validation_error
from schemas.job import ModelRef
from services.gateway.auth import mint_token
from services.runtime import Roles, run
from services.sheep import images
from services.sheep.membership import Membership

DEFAULT_CONFIG = Path("examples/configs/shepherd-bare.yml")


def _config(path: Path | None) -> Config:
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    return load_config(path)


def _scopes(text: str) -> list[str]:
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    known = get_args(Scope)
    if not scopes or any(s not in known for s in scopes):
        raise argparse.ArgumentTypeError(f"a comma-separated subset of {', '.join(known)}")
    return scopes


def _print_token(name: str, scopes: list[str]) -> int:
    """Only the digest goes into the config; the token is shown this once."""
    token = mint_token()
    try:
        entry = TokenConfig(name=name, scopes=scopes, token=SecretStr(token))
    except ValidationError as exc:
        print(f"shepherd token: {format_validation_error(exc)}", file=sys.stderr)
        return 2
    print(token)
    print(f"# ^ the token for {name}, shown only now. Its entry under gateway.tokens:")
    entry_yaml = [entry.model_dump(include={"name", "scopes", "sha256"})]
    print(yaml.safe_dump(entry_yaml, sort_keys=False, default_flow_style=None), end="")
    return 0


def _model_ref(text: str) -> ModelRef:
    name, _, version = text.partition(":")
    try:
        return ModelRef(name=name, version=version) if version else ModelRef(name=name)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(format_validation_error(exc)) from None


def _build_image(args: argparse.Namespace, config: Config) -> int:
    """Print the image built, so that scripts can use it."""
    registry = args.registry or config.registry.url
    auth = images.registry_auth(config.registry)
    push = not args.no_push
    try:
        client = images.connect()
        if args.kind == "runner":
            image = images.ensure_runner_image(client, registry, push=push, auth=auth)
        elif args.kind == "services":
            image = images.ensure_services_image(client, registry, push=push, auth=auth)
        else:
            image = images.build_model_image(
                client, args.model_dir, args.model, registry, push=push, auth=auth
            )
    except images.ImageError as exc:
        print(f"shepherd image: {exc}", file=sys.stderr)
        return 1
    print(image)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shepherd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [
        ("up", "run everything in one process"),
        ("gateway", "run the HTTP gateway"),
        ("notifier", "run the notifier"),
    ]:
        sub.add_parser(name, help=help_text).add_argument("-c", "--config", type=Path)
    sheep = sub.add_parser("sheep", help="run one sheep")
    which = sheep.add_mutually_exclusive_group(required=True)
    which.add_argument("sheep_id", nargs="?", help="a sheep the config names")
    which.add_argument(
        "--class", dest="sheep_class", help="join this class (sheep_classes) with a fresh id"
    )
    sheep.add_argument("-c", "--config", type=Path)
    token = sub.add_parser("token", help="mint a gateway bearer token")
    token.add_argument("--name", required=True, help="who will hold it (named in logs)")
    token.add_argument("--scopes", type=_scopes, required=True, help="read, submit or both")
    image = sub.add_parser("image", help="build container images (no registry needed)")
    kinds = image.add_subparsers(dest="kind", required=True)
    kinds.add_parser("runner", help="the runner image every model image starts from")
    kinds.add_parser("services", help="the image of the services (gateway, notifier, sheep)")
    model = kinds.add_parser("model", help="the image <registry>/NAME:VERSION of a model")
    model.add_argument("model_dir", type=Path, metavar="DIR", help="holds shepherd-runner.yaml")
    model.add_argument("model", type=_model_ref, metavar="NAME:VERSION")
    for kind in kinds.choices.values():
        kind.add_argument("--registry", metavar="HOST:PORT", help="default: registry.url")
        kind.add_argument("--no-push", action="store_true", help="build only")
        kind.add_argument("-c", "--config", type=Path)
    args = parser.parse_args(argv)
    if args.command == "token":
        return _print_token(args.name, args.scopes)

    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("DEBUG") == "1" else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    try:
        config = _config(args.config)
    except ConfigError as exc:
        print(f"shepherd: {exc}", file=sys.stderr)
        return 2
    if args.command == "image":
        return _build_image(args, config)
    if args.command == "up":
        roles = Roles(gateway=True, notifier=True, sheep=list(config.sheep))
    elif args.command == "sheep":
        try:
            member = (
                Membership.joining(config, args.sheep_class)
                if args.sheep_class
                else Membership.named(config, args.sheep_id)
            )
        except ValueError as exc:
            print(f"shepherd: {exc}", file=sys.stderr)
            return 2
        roles = Roles(sheep=[member])
    else:
        roles = Roles(**{args.command: True})
    try:
        uvloop.run(run(config, roles))
    except KeyboardInterrupt:
        pass
    except ConfigError as exc:  # the config names something that cannot be used
        print(f"shepherd: cannot start: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"shepherd: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
