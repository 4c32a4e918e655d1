# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The execution environment: ansible-builder builds execution-environment.yml on the local
Debian base, and ansible-navigator runs stream_request and s2ds_info in it against two S2CS
control servers on this host (loopback only: the EE container shares the host's network).

The shipped definition asks Galaxy for the collections; this machine has no Galaxy and a
TLS-inspecting path to PyPI, so the test writes a derived definition: the built collection and
the dependency collections the ``ansible`` pip package ships as ``type: dir`` sources
(``--offline``), and the host's CA bundle for pip. Python requirements are installed in the
base stage first so that a rebuild after a code change reuses that layer.

Ports 46600-46699.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid

import pytest
import yaml

from conftest import ROOT, streamcheck
from s2cs_real import Server, make_pki, sessions

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client import close_stream  # noqa: E402

pytestmark = pytest.mark.docker

BIN = os.path.dirname(sys.executable)
BASE_IMAGE = "local/debian:bookworm"
IMAGE = "scistream-gateway-ee:test"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PLAYBOOK = """
- name: The stream through the EE
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Stream from PROD to CONS
      scistream.gateway.stream_request:
        prod_server: "{{ prod_server }}"
        cons_server: "{{ cons_server }}"
        ca_path: "{{ ca_path }}"
        uid: "{{ uid }}"
        num_conn: 1
        producer_targets: "{{ producer_targets }}"
        # The PROD gateway's listeners are on this host's loopback: allowed, as an operator would.
        cons_allowed_targets: ["127.0.0.0/8"]
      register: stream
    - name: The PROD gateway's sessions
      scistream.gateway.s2ds_info:
        state_dir: "{{ prod_state_dir }}"
        uid: "{{ uid }}"
      register: info
    - name: Show the results
      ansible.builtin.debug:
        msg: "EE-RESULT {{ {'listeners': stream.listeners, 'sessions': info.sessions} | to_json }}"
"""


def _dependencies(shipped):
    """galaxy.yml's dependencies and theirs, as namespace/name paths under ``shipped``."""
    with open(os.path.join(ROOT, "galaxy.yml")) as handle:
        todo = list(yaml.safe_load(handle)["dependencies"])
    found = []
    while todo:
        name = todo.pop(0).replace(".", "/")
        if name in found:
            continue
        found.append(name)
        with open(os.path.join(shipped, name, "MANIFEST.json")) as handle:
            todo += list(json.load(handle)["collection_info"]["dependencies"] or {})
    return tuple(found)


def _tool(name):
    path = os.path.join(BIN, name)
    return path if os.access(path, os.X_OK) else None


def _docker_image_exists(name):
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode == 0


def _docker_image_id(name):
    """The id of the image ``name`` names, or None."""
    proc = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", name], capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def ee_image(tmp_path_factory):
    """Build the EE (the shipped definition, derived for this machine); yields (image, build seconds)."""
    for tool in ("ansible-builder", "ansible-navigator", "ansible-galaxy"):
        if not _tool(tool):
            pytest.skip("%s is not installed (tests/requirements.txt)" % tool)
    if shutil.which("docker") is None or not _docker_image_exists(BASE_IMAGE):
        pytest.skip("no Docker Engine or no %s (.ci/images)" % BASE_IMAGE)
    work = tmp_path_factory.mktemp("ee")
    # The collection as users get it: the built tarball, unpacked.
    subprocess.run([_tool("ansible-galaxy"), "collection", "build", ROOT, "--output-path", str(work)],
                   check=True, capture_output=True, timeout=120)
    collections = work / "files" / "collections"
    target = collections / "scistream" / "gateway"
    target.mkdir(parents=True)
    with tarfile.open(glob.glob(str(work / "scistream-gateway-*.tar.gz"))[0]) as tar:
        tar.extractall(target, filter="data")
    shipped = os.path.join(sys.prefix, "lib", "python%d.%d" % sys.version_info[:2], "site-packages",
                           "ansible_collections")
    dependencies = _dependencies(shipped)
    for dependency in dependencies:
        shutil.copytree(os.path.join(shipped, dependency), collections / dependency,
                        ignore=shutil.ignore_patterns("__pycache__", "tests"))
    shutil.copy(CA_BUNDLE, work / "files" / "host-ca.crt")
    shutil.copy(os.path.join(ROOT, "meta", "ee-requirements.txt"), work / "files" / "ee-requirements.txt")

    with open(os.path.join(ROOT, "execution-environment.yml")) as handle:
        definition = yaml.safe_load(handle)
    definition["images"]["base_image"]["name"] = BASE_IMAGE
    definition["dependencies"]["galaxy"] = {"collections": [
        {"name": "/build/collections/%s" % path, "type": "dir"}
        for path in ("scistream/gateway",) + dependencies]}
    definition.setdefault("build_arg_defaults", {})["ANSIBLE_GALAXY_CLI_COLLECTION_OPTS"] = "--offline"
    definition["options"]["tags"] = [IMAGE]
    definition["additional_build_files"] = [{"src": "files/host-ca.crt", "dest": "host"},
                                            {"src": "files/ee-requirements.txt", "dest": "host"},
                                            {"src": "files/collections", "dest": "collections"}]
    steps = definition["additional_build_steps"]
    core = definition["dependencies"]["ansible_core"]["package_pip"]
    runner = definition["dependencies"]["ansible_runner"]["package_pip"]
    steps["prepend_base"] = [
        "COPY _build/host/host-ca.crt /etc/ssl/certs/host-ca.crt",
        "ENV PIP_CERT=/etc/ssl/certs/host-ca.crt",
    ] + steps["prepend_base"] + [
        # This machine only: the requirements first, in a layer that outlives code changes.
        "COPY _build/host/ee-requirements.txt /tmp/ee-requirements.txt",
        "RUN python3 -m pip install --no-cache-dir -r /tmp/ee-requirements.txt '%s' '%s' bindep pyyaml packaging"
        % (core, runner),
    ]
    steps["prepend_galaxy"] = ["COPY _build/collections /build/collections"]
    with open(work / "execution-environment.yml", "w") as handle:
        yaml.safe_dump(definition, handle, sort_keys=False)

    superseded = _docker_image_id(IMAGE)
    started = time.monotonic()
    proc = subprocess.run([_tool("ansible-builder"), "build", "-f", "execution-environment.yml", "--context",
                           "context", "--container-runtime", "docker", "-v", "3"],
                          cwd=work, capture_output=True, text=True, timeout=1500, check=False)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    print("EE build: %.1f s" % seconds)
    if superseded and superseded != _docker_image_id(IMAGE):
        # The last run's image lost its tag to this one: remove it, or every run leaves ~640 MB behind.
        # (Refused, harmlessly, while a container or another tag still uses it.)
        subprocess.run(["docker", "image", "rm", superseded], capture_output=True, timeout=120, check=False)
    yield IMAGE, seconds


def test_image_holds_what_the_modules_need(ee_image):
    """Introspection found the collection's Python and system requirements; they import in the EE."""
    image, dummy = ee_image
    script = ("import grpc, google.protobuf, jinja2, docker, requests, cryptography, nftables; "
              "import ansible_collections.scistream.gateway.plugins.module_utils.s2cs.client")
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "-e", "PYTHONPATH=/usr/share/ansible/collections",
                           image, "python3", "-c", script],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "ansible-galaxy", "collection",
                           "list", "--format", "json"], capture_output=True, text=True, timeout=120, check=False)
    listed = {name for path in json.loads(proc.stdout).values() for name in path}
    assert {"scistream.gateway", "ansible.posix", "community.crypto", "community.docker",
            "community.general"} <= listed


def test_stream_request_and_s2ds_info_in_the_ee(ee_image, tmp_path, sink):
    """ansible-navigator runs stream_request and s2ds_info in the EE: a stream set up, bytes through."""
    image, dummy = ee_image
    pki = make_pki(tmp_path)
    prod = Server(pki, tmp_path / "gateway-a", 46600, "46610-46619")
    cons = Server(pki, tmp_path / "gateway-b", 46601, "46620-46629")
    try:
        receiver = sink()
        uid = str(uuid.uuid4())
        variables = {"prod_server": prod.address, "cons_server": cons.address, "ca_path": pki["ca.crt"],
                     "uid": uid, "producer_targets": ["127.0.0.1:%d" % receiver.port],
                     "prod_state_dir": prod.state_dir}
        # navigator mounts the playbook's directory itself: a directory of its own, under the one mounted
        # below, as Docker refuses two mounts on one path ("Duplicate mount point").
        project = tmp_path / "project"
        project.mkdir()
        (project / "ee.yml").write_text(PLAYBOOK)
        (tmp_path / "vars.json").write_text(json.dumps(variables))
        argv = [_tool("ansible-navigator"), "run", str(project / "ee.yml"), "-e", "@%s" % (tmp_path / "vars.json"),
                "--eei", image, "--ce", "docker", "--mode", "stdout", "--pull-policy", "never", "--pae", "false",
                "--lf", str(tmp_path / "navigator.log"),
                # loopback of this host; the state dir and the CA at the same paths; the host's pids
                "--co=--network=host", "--co=--pid=host", "--co=-v=%s:%s" % (tmp_path, tmp_path)]
        proc = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=600, check=False,
                              env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"))
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
        line = [x for x in proc.stdout.splitlines() if "EE-RESULT" in x][-1]
        result = json.loads(line.split("EE-RESULT", 1)[1].strip().rstrip('"').replace('\\"', '"'))
        assert result["listeners"] == ["127.0.0.1:46620"]
        assert [s["uid"] for s in result["sessions"]] == [uid]
        sent = streamcheck.send("127.0.0.1", 46620, 4 * 1024 * 1024, timeout=30)
        assert receiver.wait()["sha256"] == sent["sha256"]
        with prod.client() as prod_client, cons.client() as cons_client:
            assert close_stream(prod_client, cons_client, uid)
        assert not sessions(prod.state_dir) and not sessions(cons.state_dir)
    finally:
        prod.stop()
        cons.stop()
