#!/usr/bin/env python3
"""Finishes an OCI archive of Podman's the way Docker's own `docker save`
(Engine 25 and later) writes one, so that Docker takes it whole.

1. Podman keeps the Dockerfile's HEALTHCHECK in an image built in Docker
   format, but writing an OCI archive converts each config to the OCI image
   spec, which has no such field, and drops it. Docker reads an OCI
   image's config as its own format and honours a `config.Healthcheck`
   there (the OCI images BuildKit writes carry one), so every config gets
   the field back, and every manifest and index on the way to a changed
   blob is rewritten with the new digests.
2. An archive of one image also gets Docker's `manifest.json` (config,
   layers, the name from index.json), which `docker load` reads where
   Docker's image store is not containerd's, and Podman's docker-archive
   transport too.

Layers are not touched; blobs nothing refers to any more are left out.
Running it twice gives the same archive.

usage: finish-archive.py ARCHIVE HEALTHCHECK_JSON
  HEALTHCHECK_JSON as `podman image inspect --format '{{json .Config.Healthcheck}}'`
  prints it: {"Test": [...], "Interval": ns, "Timeout": ns, ...}
"""

import hashlib
import io
import json
import os
import sys
import tarfile

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def dumps(value):
    return json.dumps(value, separators=(",", ":")).encode()


class Layout:
    """The files of an OCI image layout, by path."""

    def __init__(self, files):
        self.files = files

    def blob(self, descriptor):
        algorithm, digest = descriptor["digest"].split(":", 1)
        return self.files[f"blobs/{algorithm}/{digest}"]

    def put(self, descriptor, data):
        """Stores `data` as a blob; `descriptor` with its digest and size."""
        digest = hashlib.sha256(data).hexdigest()
        self.files[f"blobs/sha256/{digest}"] = data
        return dict(descriptor, digest=f"sha256:{digest}", size=len(data))

    def with_healthcheck(self, descriptor, healthcheck):
        """The descriptor of the index or manifest `descriptor` points to,
        rewritten so that every image config below it has `healthcheck`."""
        data = json.loads(self.blob(descriptor))
        kind = descriptor.get("mediaType") or data.get("mediaType")
        if kind == INDEX:
            data["manifests"] = [self.with_healthcheck(m, healthcheck) for m in data["manifests"]]
        elif kind == MANIFEST:
            config = json.loads(self.blob(data["config"]))
            config.setdefault("config", {})["Healthcheck"] = healthcheck
            data["config"] = self.put(data["config"], dumps(config))
        else:
            raise SystemExit(f"finish-archive.py: unexpected media type {kind!r}")
        return self.put(descriptor, dumps(data))

    def reachable(self, descriptor, out):
        """Adds the blob paths `descriptor` leads to into `out`."""
        algorithm, digest = descriptor["digest"].split(":", 1)
        out.add(f"blobs/{algorithm}/{digest}")
        kind = descriptor.get("mediaType")
        if kind in (INDEX, MANIFEST):
            data = json.loads(self.blob(descriptor))
            for child in data.get("manifests", []):
                self.reachable(child, out)
            if "config" in data:
                self.reachable(data["config"], out)
            for layer in data.get("layers", []):
                self.reachable(layer, out)


def main(archive, healthcheck_json):
    healthcheck = json.loads(healthcheck_json)
    if not isinstance(healthcheck, dict) or not healthcheck.get("Test"):
        raise SystemExit(f"finish-archive.py: no health check in {healthcheck_json!r}")
    with tarfile.open(archive) as tar:
        files = {
            m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()
        }
    layout = Layout(files)
    index = json.loads(files["index.json"])
    index["manifests"] = [layout.with_healthcheck(m, healthcheck) for m in index["manifests"]]
    files["index.json"] = dumps(index)
    keep = {"oci-layout", "index.json"}
    for m in index["manifests"]:
        layout.reachable(m, keep)
    files.pop("manifest.json", None)
    if len(index["manifests"]) == 1 and index["manifests"][0]["mediaType"] == MANIFEST:
        top = index["manifests"][0]
        manifest = json.loads(layout.blob(top))
        name = top.get("annotations", {}).get("org.opencontainers.image.ref.name")
        def path(d):
            return "blobs/" + d["digest"].replace(":", "/")

        files["manifest.json"] = dumps([{
            "Config": path(manifest["config"]),
            "RepoTags": [name] if name else [],
            "Layers": [path(layer) for layer in manifest["layers"]],
        }])
        keep.add("manifest.json")

    tmp = archive + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        directories = sorted({os.path.dirname(p) for p in keep if "/" in p} | {"blobs"})
        for d in directories:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path in sorted(keep):
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(files[path]), 0o644
            tar.addfile(info, io.BytesIO(files[path]))
    os.replace(tmp, archive)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
