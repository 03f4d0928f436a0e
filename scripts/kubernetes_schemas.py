"""Write the JSON schemas kubeconform checks deploy/kubernetes/ against, offline, into
deploy/kubernetes/schemas/ (named as kubeconform looks them up: <kind>-<group>-<version>.json).

    python scripts/kubernetes_schemas.py --kubernetes DIR --crd FILE [--crd FILE ...]

--kubernetes: a "local-strict" schema folder of the kubernetes-validate package (one file per
kind, their references into _definitions.json), whose references are inlined here, so that
each schema stands alone. --crd: a CustomResourceDefinition (KEDA's, the RabbitMQ and MinIO
operators'); the openAPIV3Schema of each version it serves becomes a schema, strict as
kubeconform's own openapi2jsonschema makes them (no property the CRD does not name).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).parents[1] / "deploy" / "kubernetes" / "schemas"
#: The built-in kinds deploy/kubernetes/ uses.
KINDS = (
    "configmap-v1",
    "deployment-apps-v1",
    "job-batch-v1",
    "namespace-v1",
    "secret-v1",
    "service-v1",
)
#: How the kind files, and the definitions among themselves, refer to a definition.
DEFINITIONS = ("/api/_definitions.json#/$defs/", "#/$defs/")


def inline(node: Any, definitions: dict[str, Any]) -> Any:
    """``node`` with every reference into the definitions replaced by what it names."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(DEFINITIONS):
            name = ref.removeprefix(DEFINITIONS[0]).removeprefix(DEFINITIONS[1])
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**inline(definitions[name], definitions), **rest}
        return {key: inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [inline(item, definitions) for item in node]
    return node


def strict(node: Any) -> Any:
    """A CRD's schema as JSON Schema: int-or-string spelled out, and objects that name their
    properties closed to others, unless the CRD keeps unknown fields."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: strict(value) for key, value in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in node and "additionalProperties" not in node and not preserve:
        node["additionalProperties"] = False
    return node


def crd_schemas(path: Path) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    group = crd["spec"]["group"].split(".")[0]
    kind = crd["spec"]["names"]["kind"].lower()
    schemas = {}
    for version in crd["spec"]["versions"]:
        if version.get("served", True):
            schema = strict(version["schema"]["openAPIV3Schema"])
            schemas[f"{kind}-{group}-{version['name']}"] = schema
    return schemas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubernetes", type=Path, required=True)
    parser.add_argument("--crd", type=Path, action="append", default=[])
    args = parser.parse_args()
    definitions = json.loads((args.kubernetes / "_definitions.json").read_text())["$defs"]
    schemas = {
        kind: inline(json.loads((args.kubernetes / f"{kind}.json").read_text()), definitions)
        for kind in KINDS
    }
    for crd in args.crd:
        schemas.update(crd_schemas(crd))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, schema in sorted(schemas.items()):
        (OUT / f"{name}.json").write_text(json.dumps(schema, separators=(",", ":")) + "\n")
        print(OUT / f"{name}.json")


if __name__ == "__main__":
    main()
