#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: proxy_container
short_description: Manage one HAProxy, NGINX or stunnel proxy container with its configuration
version_added: 0.1.0
description:
  - Runs one proxy container on a Docker Engine, with a configuration you give (as content, or as a
    Jinja2 template and variables) and extra files such as a pre-shared key.
  - The files are written to O(config_dir) on the Docker host and mounted read-only at C(/etc/scistream)
    in the container. A changed configuration is first checked by the proxy itself in a short-lived
    container of the same image, then applied by signal (HAProxy SIGUSR2, NGINX SIGHUP; established
    connections stay) or, for stunnel, by a restart.
  - The container runs with C(network_mode=host) (or O(network_mode)), every capability dropped but what
    the proxy needs, C(no-new-privileges), restart policy C(unless-stopped). A label holds a hash of what it
    was created with; a container created otherwise (another O(image), for example) is recreated.
  - This is the code path of M(scistream.gateway.s2ds) with O(scistream.gateway.s2ds#module:runtime=docker),
    which renders the configuration from a session instead.
author:
  - SciStream gateway contributors (@scistream)
requirements:
  - The Docker SDK for Python (Debian C(python3-docker)) on the managed host.
  - Jinja2 on the managed host when O(template) is used.
extends_documentation_fragment:
  - scistream.gateway.docker
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
    details: Shows the main configuration file; O(files) are never shown.
options:
  name:
    description: Container name.
    type: str
    required: true
  backend:
    description: The proxy in the image; decides the command, the config file name and how a change is applied.
    type: str
    choices: [haproxy, nginx, stunnel]
    required: true
  image:
    description: The image. Defaults to C(haproxy:lts), C(nginx:stable) or the collection's C(scistream/stunnel:local).
    type: str
  state:
    description:
      - V(started) creates, starts and keeps the container up to date; V(stopped) keeps it created but stopped;
        V(restarted) restarts it every run; V(absent) removes it and O(config_dir).
    type: str
    choices: [started, stopped, absent, restarted]
    default: started
  config:
    description: The proxy's configuration, as text. Mutually exclusive with O(template).
    type: str
  template:
    description: Path on the managed host of a Jinja2 template rendered with O(vars) into the configuration.
    type: path
  vars:
    description: Variables for O(template).
    type: dict
    default: {}
  files:
    description: Extra files in the config directory, for example a stunnel C(PSKsecrets) file.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: File name (no directories), seen in the container as C(/etc/scistream/<name>).
        type: str
        required: true
      content:
        description: The file's content. Never logged or shown in diffs.
        type: str
        required: true
      mode:
        description: File mode.
        type: raw
        default: '0600'
  config_dir:
    description: Directory on the Docker host holding the files. Defaults to C(/etc/scistream/containers/<name>).
    type: path
  network_mode:
    description: Docker network mode of the container.
    type: str
    default: host
"""

EXAMPLES = r"""
- name: An HAProxy forwarding one port, from an inline configuration
  scistream.gateway.proxy_container:
    name: edge-haproxy
    backend: haproxy
    config: |
      defaults
          mode tcp
          timeout connect 5s
          timeout client 1h
          timeout server 1h
      frontend in
          bind 0.0.0.0:5100
          default_backend out
      backend out
          server producer 10.0.3.10:5074

- name: A stunnel TLS-PSK server with its key file
  scistream.gateway.proxy_container:
    name: edge-stunnel
    backend: stunnel
    template: /etc/scistream/stunnel-server.conf.j2
    vars:
      accept: 0.0.0.0:5100
      connect: 10.0.3.10:5074
    files:
      - name: psk.txt
        content: "gateway-b:{{ vault_psk }}"
        mode: "0600"

- name: Remove it
  scistream.gateway.proxy_container:
    name: edge-haproxy
    backend: haproxy
    state: absent
"""

RETURN = r"""
name:
  description: The container name.
  returned: always
  type: str
  sample: edge-haproxy
image:
  description: The image.
  returned: always
  type: str
  sample: haproxy:lts
config_dir:
  description: The directory on the Docker host that holds the files.
  returned: always
  type: str
  sample: /etc/scistream/containers/edge-haproxy
actions:
  description: What was done (or would be, in check mode), among C(write_config), C(create), C(start),
    C(reload), C(restart), C(stop), C(remove), C(remove_files).
  returned: always
  type: list
  elements: str
  sample: [write_config, create, start]
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.scistream.gateway.plugins.module_utils.ansible_s2ds import (
    DOCKER_OPTIONS,
    S2DSError,
    docker_engine_options,
    fail_from,
    require_core,
    require_docker,
)

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def file_mode(module, value):
    try:
        return int(str(value), 8) if isinstance(value, str) else int(value)
    except ValueError:
        module.fail_json(msg="files mode %r: must be an octal string such as '0600'" % value)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            backend=dict(type="str", required=True, choices=["haproxy", "nginx", "stunnel"]),
            image=dict(type="str"),
            state=dict(type="str", default="started", choices=["started", "stopped", "absent", "restarted"]),
            config=dict(type="str"),
            template=dict(type="path"),
            vars=dict(type="dict", default={}),
            files=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                content=dict(type="str", required=True, no_log=True),
                mode=dict(type="raw", default="0600"),
            )),
            config_dir=dict(type="path"),
            network_mode=dict(type="str", default="host"),
            **DOCKER_OPTIONS
        ),
        mutually_exclusive=[("config", "template")],
        required_if=[("state", "started", ("config", "template"), True),
                     ("state", "restarted", ("config", "template"), True)],
        supports_check_mode=True,
    )
    require_core(module)
    require_docker(module)
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.backends import get_backend, render_text
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.containers import converge_proxy_container
    from ansible_collections.scistream.gateway.plugins.module_utils.s2ds.runtimes.docker import DockerEngine, ProxyContainer

    params = module.params
    name = params["name"]
    if not NAME_RE.fullmatch(name):
        module.fail_json(msg="name %r: must be a Docker container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)" % name)
    backend = get_backend(params["backend"])
    image = params["image"] or backend.default_image
    config_dir = params["config_dir"] or os.path.join("/etc/scistream/containers", name)
    result = dict(changed=False, name=name, image=image, config_dir=config_dir, actions=[])
    try:
        files = {}
        if params["state"] != "absent" and (params["config"] is not None or params["template"]):
            if params["template"]:
                with open(params["template"], encoding="utf-8") as handle:
                    config = render_text(handle.read(), params["vars"], "template", params["template"])
            else:
                config = params["config"]
            files[backend.config_name] = (config, 0o644)
        for extra in params["files"]:
            if not FILE_RE.fullmatch(extra["name"]) or extra["name"] == backend.config_name:
                module.fail_json(msg="files name %r: must be a plain file name other than %s"
                                 % (extra["name"], backend.config_name))
            files[extra["name"]] = (extra["content"], file_mode(module, extra["mode"]))
        engine = DockerEngine(**docker_engine_options(params))
        container = ProxyContainer(engine, name, backend, image, config_dir,
                                   labels={"org.scistream.managed-by": "scistream.gateway.proxy_container"},
                                   network_mode=params["network_mode"])
        actions, diff = converge_proxy_container(container, files, params["state"], module.check_mode)
    except OSError as exc:
        module.fail_json(msg="template %r cannot be read: %s" % (params["template"], exc.strerror), **result)
    except S2DSError as exc:
        fail_from(module, exc, **result)
    result.update(changed=bool(actions), actions=actions)
    if module._diff and diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
