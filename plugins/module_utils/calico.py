# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
"""Glue between the calico.docker modules and ``calico_lib``, where all the logic lives.

A module builds its ``AnsibleModule`` with ``calico_module`` (adds the ``datastore`` option,
check mode, fails with one clear message when ``calico_lib`` is missing, and every failure
message is one printable line, Ansible's own argument refusals included), then calls
``run(module, work)``: ``work(client)`` gets a ``calico_lib.Client`` on the datastore the
``datastore`` option names (resolved like calicoctl) and returns the result dict; any error
of the library ends the run with ``fail_json(msg=<its one-line message>)``.
"""

from __future__ import annotations

import traceback

from ansible_collections.calico.docker.plugins.module_utils.messages import OneLineModule

try:
    import calico_lib
    from calico_lib.errors import CalicoError, NotFoundError, ValidationError
    from calico_lib.hostname import resolve_hostname as _library_hostname
except ImportError:
    calico_lib = None
    CALICO_LIB_IMPORT_ERROR = traceback.format_exc()

    class CalicoError(Exception):  # type: ignore[no-redef]
        pass

    class NotFoundError(CalicoError):  # type: ignore[no-redef]
        pass

    class ValidationError(CalicoError):  # type: ignore[no-redef]
        def __init__(self, field, problem):
            self.field = field
            self.problem = problem
            super().__init__(f"{field}: {problem}")
else:
    CALICO_LIB_IMPORT_ERROR = None

MISSING_CALICO_LIB = (
    "calico_lib is not installed on this host (the calico.docker.node role installs it into "
    "/opt/calico/venv; set ansible_python_interpreter to /opt/calico/venv/bin/python)")

#: what a password looks like in diffs and results
MASK = "********"


DATASTORE_OPTIONS = ("datastore", "etcd_ca", "etcd_cert", "etcd_key", "etcd_user",
                     "etcd_password_file")


def datastore_argument_spec():
    return {"datastore": {"type": "str"}, "etcd_ca": {"type": "path"},
            "etcd_cert": {"type": "path"}, "etcd_key": {"type": "path"},
            "etcd_user": {"type": "str"},
            "etcd_password_file": {"type": "path", "no_log": False}}


def connect(module, create=True):
    """A ``calico_lib.Client`` on the datastore the module's options name (each resolved
    like calicoctl's when not given).

    Check mode never creates an embedded store: on a host that has none yet, it compares
    against an empty one in memory (and warns), so a first run can be previewed."""
    p = module.params
    tls = {name: p.get(name) for name in DATASTORE_OPTIONS[1:]}
    try:
        return calico_lib.connect(p.get("datastore"), create=create, **tls)
    except calico_lib.errors.DatastoreMissing as exc:
        if not module.check_mode:
            raise
        from calico_lib.datastore.sqlite import SqliteDatastore

        module.warn(f"{exc}: check mode compared against an empty datastore")
        return calico_lib.Client(SqliteDatastore.in_memory())


def require_calico_lib(module):
    """Fail the run with one clear message when ``calico_lib`` cannot be imported."""
    if CALICO_LIB_IMPORT_ERROR is not None:
        module.fail_json(msg=MISSING_CALICO_LIB, exception=CALICO_LIB_IMPORT_ERROR)


def calico_module(argument_spec, datastore=True, **kwargs):
    """An ``AnsibleModule`` with check mode, plus the ``datastore`` option unless told not;
    its failure messages are one line (``messages.OneLineModule``)."""
    spec = dict(argument_spec)
    if datastore:
        spec.update(datastore_argument_spec())
    module = OneLineModule(argument_spec=spec, supports_check_mode=True, **kwargs)
    require_calico_lib(module)
    return module


def fail(module, exc):
    """End the run with the library's one-line message."""
    module.fail_json(msg=str(exc) or exc.__class__.__name__)


def run(module, work, read_only=False, preview=False):
    """Run ``work(client)`` on the datastore the ``datastore`` option names (else
    $CALICO_DATASTORE, else /etc/calico/calico.conf, else the default, like calicoctl) and
    exit with the result dict it returns; any error ends the run with its one-line message.

    ``preview``: a module that writes policy. In check mode ``work`` gets a client on a draft
    (``calico_lib.preview.Draft``): it writes as in a real run, with the same validation,
    and nothing reaches the datastore; the result then says what every host's dataplane
    would do (``dataplane``, and the rule lines in the diff)."""
    try:
        # check mode never creates an embedded store (nor its folders)
        with connect(module, create=not (module.check_mode or read_only)) as client:
            if preview and module.check_mode:
                out = preview_work(module, client, work)
            else:
                out = work(client)
    except (CalicoError, ValueError, OSError) as exc:
        fail(module, exc)
    module.exit_json(**out)


def preview_work(module, client, work):
    from calico_lib.preview import Draft

    draft = Draft(client.store)
    out = work(draft.client)
    plan = draft.plan()
    out["dataplane"] = plan.to_dict()
    if module._diff and isinstance(out.get("diff"), dict):
        out["diff"]["prepared"] = "dataplane: " + "\n".join(plan.lines()) + "\n"
    return out


def lookup(getter, *args):
    """``getter(*args)``, or None when the object does not exist."""
    try:
        return getter(*args)
    except NotFoundError:
        return None


def result(changed, before, after, **extra):
    """The common result: ``changed`` plus a before/after ``diff``."""
    out = {"changed": bool(changed), "diff": {"before": before, "after": after}}
    out.update(extra)
    return out


def ensure_absent(current, remove, key, show=None):
    """state=absent: remove ``current`` if there is one (in check mode, from the draft)."""
    if current is not None:
        remove()
    before = {} if current is None else (show or (lambda obj: obj.to_dict()))(current)
    return result(current is not None, before, {}, **{key: None})


def ensure_present(before, wanted, put, key):
    """state=present: store ``wanted`` with ``put`` when it differs from ``before`` (in
    check mode, in the draft)."""
    after = wanted.to_dict()
    changed = after != before
    if changed:
        changed = put(wanted)
    return result(changed, before, after, **{key: after})


def given(module, *names):
    """The options among ``names`` the task set (not left at None)."""
    return {name: module.params[name] for name in names if module.params[name] is not None}


def resolve_hostname(hostname):
    """This host's name like the agent's (``calico_lib.hostname``: the option, else
    $CALICO_HOSTNAME, else the system host name); a name that cannot be a node's fails
    naming the ``hostname`` option."""
    name = _library_hostname(hostname)
    try:
        calico_lib.Node(name)
    except ValidationError as exc:
        raise ValidationError("hostname", exc.problem) from None
    return name
