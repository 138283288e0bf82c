"""The attach backend interface and the registry of backends.

A backend makes an image usable by something else: a block device or a file system on this host
(``nbd``, ``fuse``), a disk of the Windows host or of one of its virtual machines (``hyperv``).
Every backend offers the same six things (``Backend``): whether it can work here
(``available``), ``attach`` / ``detach`` on the host, ``list_attached``, and ``add_to_vm`` /
``remove_from_vm`` for backends with virtual machines (the others raise ``AttachError``;
``BackendBase`` does that for them).

Backends are found by name:

* built in: ``hyperv`` (``vhdx_cli.attach.hyperv:HyperVBackend``), ``nbd``
  (``vhdx_cli.attach.linux_nbd:NbdBackend``) and ``fuse`` (``vhdx_cli.attach.fuse:FuseBackend``),
  imported only when chosen, so a backend whose module or dependencies are missing fails only
  when it is asked for;
* from other distributions, through the entry-point group ``vhdx.attach_backends``: in the
  other project's pyproject.toml,

      [project.entry-points."vhdx.attach_backends"]
      iscsi = "vhdx_iscsi:IscsiBackend"

  An entry point cannot replace a built-in name.

A backend factory (the class) is called with one ``BackendSettings`` argument when it has a
parameter named ``settings`` or a required positional parameter, otherwise with none (and then
settings other than the defaults, such as --host or --dry-run, are refused).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

from ..errors import CommandError

ENTRY_POINT_GROUP = "vhdx.attach_backends"
BUILTIN_BACKENDS: dict[str, str] = {
    "hyperv": "vhdx_cli.attach.hyperv:HyperVBackend",
    "nbd": "vhdx_cli.attach.linux_nbd:NbdBackend",
    "fuse": "vhdx_cli.attach.fuse:FuseBackend",
}


class AttachError(CommandError):
    """A request a backend cannot carry out (unknown backend, no VMs, bad option, ...)."""


@dataclass(frozen=True)
class AttachRequest:
    """What to attach, and how.

    Attributes:
        image: the image path (for a remote Hyper-V host: a Windows path on that host).
        read_only: attach without write access (the default everywhere).
        vm: a virtual machine name (``add_to_vm``).
        device: a device to use (``/dev/nbd3`` for nbd); None lets the backend choose.
        mountpoint: where to mount (fuse).
        options: backend-specific ``KEY=VALUE`` settings (``vhdx attach -o KEY=VALUE``).
        parent, parent_search, ignore_id_mismatch: how to find the parents of a differencing
            image, for backends that open the image themselves (as ``vhdx.open`` takes them).
    """

    image: str
    read_only: bool = True
    vm: str | None = None
    device: str | None = None
    mountpoint: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    parent: str | None = None
    parent_search: tuple[str, ...] = ()
    ignore_id_mismatch: bool = False


@dataclass(frozen=True)
class Attachment:
    """One attached image.

    Attributes:
        backend: the backend's name.
        image: the image path as the backend knows it.
        target: what ``detach`` takes back (a device such as ``\\\\.\\PhysicalDrive3`` or
            ``/dev/nbd0``, a mountpoint, a VM controller slot such as ``SCSI:0:1``).
        read_only: attached without write access.
        details: backend-specific facts, JSON-ready, kebab-case keys (disk number, drive letters,
            VM name, pid, ...).
    """

    backend: str
    image: str
    target: str
    read_only: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "image": self.image, "target": self.target, "read-only": self.read_only,
                "details": dict(self.details)}


@dataclass(frozen=True)
class BackendSettings:
    """How a backend instance works (same for every request it serves).

    Attributes:
        host, user: a remote host and account (hyperv); None for this machine.
        dry_run: show what would be done (``echo``) instead of doing it.
        options: the ``-o KEY=VALUE`` settings.
        echo: where a dry run shows its commands (default: nowhere).
    """

    host: str | None = None
    user: str | None = None
    dry_run: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    echo: Callable[[str], None] | None = None

    def is_default(self) -> bool:
        return self.host is None and self.user is None and not self.dry_run and not self.options


@runtime_checkable
class Backend(Protocol):
    """What every attach backend offers."""

    name: str

    def available(self) -> tuple[bool, str]:
        """(True, what it will use) or (False, why not and what to do about it)."""
        ...

    def attach(self, req: AttachRequest) -> Attachment:
        """Attach ``req.image`` to this host (a Windows disk, a block device, a mount)."""
        ...

    def detach(self, target: str) -> None:
        """Undo an attach; ``target`` is an ``Attachment.target`` (or what the backend documents)."""
        ...

    def list_attached(self) -> list[Attachment]:
        """What this backend has attached now."""
        ...

    def add_to_vm(self, req: AttachRequest) -> Attachment:
        """Attach ``req.image`` to the virtual machine ``req.vm``."""
        ...

    def remove_from_vm(self, image_or_target: str, vm: str) -> None:
        """Remove a disk (by image path or controller slot) from the virtual machine ``vm``."""
        ...


class BackendBase:
    """Defaults for backends without virtual machines: ``add_to_vm``/``remove_from_vm`` refuse."""

    name = "?"

    def add_to_vm(self, req: AttachRequest) -> Attachment:
        raise no_vms(self.name)

    def remove_from_vm(self, image_or_target: str, vm: str) -> None:
        raise no_vms(self.name)


def no_vms(backend: str) -> AttachError:
    """The error of a backend asked for a VM it does not have."""
    return AttachError(f"the {backend} backend attaches to this host only and has no virtual machines "
                       "(use --backend hyperv with --vm NAME)")


# --- registry --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackendSpec:
    """A registered backend: its name, where its factory lives, and who provides it."""

    name: str
    target: str  # "module:attribute"
    origin: str  # "built-in" or the distribution providing the entry point
    entry_point: metadata.EntryPoint | None = None

    def load(self) -> Callable[..., Any]:
        """Import the factory. Raises AttachError naming the backend when that fails."""
        try:
            if self.entry_point is not None:
                return self.entry_point.load()  # type: ignore[no-any-return]
            module_name, _, attribute = self.target.partition(":")
            module = importlib.import_module(module_name)
            return getattr(module, attribute)  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as err:
            raise AttachError(f"the {self.name} backend ({self.target}, {self.origin}) cannot be loaded: {err}") from None


def _entry_points() -> list[metadata.EntryPoint]:
    if sys.version_info >= (3, 10):
        return list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    return list(metadata.entry_points().get(ENTRY_POINT_GROUP, ()))  # pragma: no cover


def registered_backends() -> dict[str, BackendSpec]:
    """Every backend by name: the built-ins, then entry points (which cannot shadow a built-in;
    of two entry points with one name, the first found wins)."""
    specs = {name: BackendSpec(name, target, "built-in") for name, target in BUILTIN_BACKENDS.items()}
    for ep in _entry_points():
        if ep.name in specs:
            continue
        dist = getattr(ep, "dist", None)
        origin = f"entry point of {dist.name}" if dist is not None else "entry point"
        specs[ep.name] = BackendSpec(ep.name, ep.value, origin, ep)
    return specs


def backend_spec(name: str) -> BackendSpec:
    """The registered backend ``name``, or AttachError listing the known ones."""
    specs = registered_backends()
    if name not in specs:
        raise AttachError(f"unknown attach backend {name!r} (known: {', '.join(sorted(specs))})")
    return specs[name]


def create_backend(name: str, settings: BackendSettings | None = None) -> Backend:
    """An instance of backend ``name`` configured with ``settings``.

    Raises:
        AttachError: unknown name, the factory cannot be imported, or it takes no settings and
            settings were given.
    """
    settings = settings or BackendSettings()
    factory = backend_spec(name).load()
    if _takes_argument(factory):
        backend = factory(settings)
    else:
        if not settings.is_default():
            raise AttachError(f"the {name} backend takes no --host, --user, --dry-run or -o settings")
        backend = factory()
    return backend  # type: ignore[no-any-return]


def _takes_argument(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` wants the settings: it has a parameter named ``settings`` or a
    required positional one (optional parameters, like a test hook's, are left to their defaults)."""
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # no signature available: assume the documented form
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.name == "settings" or (p.kind in positional and p.default is inspect.Parameter.empty)
               for p in parameters)


def default_backend_name(*, host: str | None = None, vm: str | None = None) -> str:
    """``hyperv`` on Windows, or whenever a Hyper-V host or VM is named; ``nbd`` elsewhere."""
    if host is not None or vm is not None or sys.platform == "win32":
        return "hyperv"
    return "nbd"


def parse_options(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``("a=1", "b=x=y")`` -> ``{"a": "1", "b": "x=y"}``; AttachError for an item without ``=``."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AttachError(f"-o {pair!r}: expected KEY=VALUE")
        options[key.strip().lower()] = value
    return options
