"""Sphinx configuration of the API reference site (`make docs`).

`make docs` runs ``sphinx-build -W --keep-going -b html docs/site build/docs``:
every warning fails the build, so a broken link or reference fails CI.  The
choices, and why:

- The pages of the markdown documents (README.md and docs/*.md) are
  ``{include}`` stubs of the real files (myst-parser): nothing is copied, so
  nothing drifts.  The stubs mirror the repository's layout (the page of
  ``docs/SYNC.md`` is ``docs/site/docs/SYNC.md``, the README's is
  ``docs/site/README.md``), because an included file's relative links are
  read from the including page: so mirrored, a link written for the real
  file (``docs/PROTOCOL.md`` in the README, ``PROTOCOL.md#4-...`` in SYNC.md)
  lands on the page that shows that file, with no rewriting.
- A link from those files to a repository file that is not a page (a C
  header, a benchmark script) becomes a download of that very file
  (:func:`link_repository_files`); a link to nothing still fails.
- The API pages are autodoc of the real, imported package (the extension is
  built in the venv), never of mocks or of the stub alone: what is listed is
  what exists.  The C methods carry their real signatures
  (``__text_signature__``: parameter names, kinds, defaults), which have no
  types; :func:`typed_native_signature` adds the types of the hand-written
  stub ``src/shmring/_core.pyi`` to them, after checking that the stub names
  the same parameters, of the same kinds, as the real method (a warning, so
  a failed build, otherwise).  The C attributes (``Channel.capacity``) get the stub's
  property types the same way (:func:`typed_native_attributes`).
- Python-domain references are not checked by Sphinx without ``nitpicky``,
  and ``nitpicky`` would also flag every standard-library name, which this
  offline build has no inventory for (no intersphinx: CI reaches no
  documentation site).  So :func:`check_own_reference` makes an unresolved
  reference to shmring's own names a warning, and leaves the standard
  library's unlinked.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
from pathlib import Path
from typing import Any, TypeVar

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util import logging

import shmring
import shmring._core

SITE = Path(__file__).resolve().parent
ROOT = SITE.parent.parent
STUB = ROOT / "src" / "shmring" / "_core.pyi"

project = "shmring"
author = "the shmring authors"
copyright = "the shmring authors"
release = version = shmring.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_click",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns: list[str] = []

# The markdown files link to headings GitHub-style (`PROTOCOL.md#4-synchronisation-primitives`):
# myst makes the same anchors for every heading level the documents use.
myst_heading_anchors = 4
myst_enable_extensions = ["deflist"]

autodoc_member_order = "bysource"
# Signatures keep the types in the signature line, where the real signature is.
autodoc_typehints = "signature"
# No "Bases:" line on the classes: their bases are the private native types and
# helpers (`_core.Channel`, `NamedObject`, `Generic[T]`); the exceptions' page asks
# for it, as their bases (`ValueError`, `TimeoutError`, ...) are what callers catch.
# "undoc-members": a public method without a docstring of its own (`AtomicInt64.load`,
# `Event.set`) is API all the same, and is listed with its signature.
autodoc_default_options = {"members": True, "undoc-members": True}
# The public classes are documented under the names users import them by (`shmring.Channel`);
# the module they are defined in is an implementation detail.
add_module_names = True
python_use_unqualified_type_names = True

html_theme = "furo"
html_title = f"shmring {release}"
html_static_path: list[str] = []

log = logging.getLogger("shmring.docs")


# -- links from the markdown documents to repository files ---------------------


def link_repository_files(app: Sphinx, doctree: nodes.document) -> None:
    """Turn a myst link that found no page into a download of the repository
    file it names, when the site's mirrored layout maps it to one.

    myst leaves a relative link to a file it cannot find as a reference to
    resolve later, which then fails.  A link such as ``../include/shmring/channel.h``
    in docs/SYNC.md points, from the page ``docs/SYNC.md`` of the site, to
    ``include/shmring/channel.h`` under the site's root: the same path under
    the repository's root is the file meant.  It runs before Sphinx collects
    the downloads of the page (a lower priority than the collector's), so the
    file is copied into the build like any download.  A link whose file does
    not exist in the repository either is left alone: it still fails."""
    docdir = (SITE / app.env.docname).parent
    for ref in list(doctree.findall(addnodes.pending_xref)):
        if ref.get("reftype") != "myst" or ref.get("refdomain"):
            continue
        target = str(ref["reftarget"]).split("#", 1)[0]
        if not target or "://" in target:
            continue
        under_site = (docdir / target).resolve()
        if not under_site.is_relative_to(SITE):
            continue
        in_repository = ROOT / under_site.relative_to(SITE)
        if not in_repository.is_file():
            continue
        download = addnodes.download_reference(
            "", "", *ref.children, refdomain=None, reftype="myst", refexplicit=ref.get("refexplicit"),
            refdoc=app.env.docname, reftarget=os.path.relpath(in_repository, docdir),
        )
        ref.replace_self(download)


# -- the C methods' signatures, typed from the stub --------------------------


def _stub_definitions() -> dict[str, ast.FunctionDef]:
    """Every function of the stub by qualified name ("Channel.send", "fence"),
    the last overload of a name standing for it."""
    tree = ast.parse(STUB.read_text(), str(STUB))
    found: dict[str, ast.FunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    found[f"{node.name}.{item.name}"] = item
    return found


STUB_FUNCTIONS = _stub_definitions()


def _stub_property_types() -> dict[str, str]:
    """The type of each property of the stub's classes ("Channel.capacity": "int")."""
    tree = ast.parse(STUB.read_text(), str(STUB))
    found: dict[str, str] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            is_getter = isinstance(item, ast.FunctionDef) and any(
                isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list
            )
            if is_getter and isinstance(item, ast.FunctionDef) and item.returns is not None:
                found[f"{node.name}.{item.name}"] = ast.unparse(item.returns)
    return found


STUB_PROPERTY_TYPES = _stub_property_types()


def _native_attribute(module: str, fullname: str) -> str | None:
    """The stub's name of the C attribute (a getset descriptor of a
    shmring._core type) that ``module.fullname`` is, or None."""
    *owner_path, attribute = fullname.split(".")
    try:
        owner: Any = importlib.import_module(module)
        for part in owner_path:
            owner = getattr(owner, part)
    except (ImportError, AttributeError):
        return None
    if not isinstance(owner, type):
        return None
    for klass in owner.__mro__:
        raw = vars(klass).get(attribute)
        if raw is not None:
            if inspect.isgetsetdescriptor(raw) and klass.__module__ == "shmring._core":
                return f"{klass.__name__}.{attribute}"
            return None
    return None


def typed_native_attributes(app: Sphinx, doctree: nodes.document) -> None:
    """Show the stub's type after a C attribute (``capacity: int``), as the
    Python properties show theirs: autodoc finds no annotation on a C type."""
    for desc in doctree.findall(addnodes.desc):
        if desc.get("domain") != "py" or desc.get("objtype") != "attribute":
            continue
        for signature in desc.findall(addnodes.desc_signature):
            key = _native_attribute(str(signature.get("module", "")), str(signature.get("fullname", "")))
            if key is None:
                continue
            if key not in STUB_PROPERTY_TYPES:
                log.warning("%s: the C attribute %s has no typed property in the stub", signature["fullname"], key,
                            location=str(STUB))
                continue
            signature += addnodes.desc_annotation(
                "", "", addnodes.desc_sig_punctuation("", ":"), addnodes.desc_sig_space(),
                nodes.Text(STUB_PROPERTY_TYPES[key]),
            )


def _annotation(arg: ast.arg) -> str | None:
    return None if arg.annotation is None else ast.unparse(arg.annotation)


def _stub_parameters(definition: ast.FunctionDef) -> list[tuple[str, inspect._ParameterKind, str | None]]:
    """(name, kind, annotation) of each parameter of a stub function, self left out."""
    args = definition.args
    kind = inspect.Parameter
    described = [(a.arg, kind.POSITIONAL_ONLY, _annotation(a)) for a in args.posonlyargs]
    described += [(a.arg, kind.POSITIONAL_OR_KEYWORD, _annotation(a)) for a in args.args]
    if args.vararg:
        described.append((args.vararg.arg, kind.VAR_POSITIONAL, None))
    described += [(a.arg, kind.KEYWORD_ONLY, _annotation(a)) for a in args.kwonlyargs]
    if args.kwarg:
        described.append((args.kwarg.arg, kind.VAR_KEYWORD, None))
    if described and described[0][0] == "self":
        described.pop(0)
    return described


def _native_key(obj: Any) -> str | None:
    """The stub's name of a C method or function of shmring._core, or None."""
    owner = getattr(obj, "__objclass__", None)
    if owner is not None and getattr(owner, "__module__", None) == "shmring._core":
        return f"{owner.__name__}.{obj.__name__}"
    if inspect.isbuiltin(obj) and getattr(obj, "__module__", None) == "shmring._core":
        return str(obj.__name__)
    return None


def typed_native_signature(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, signature: str | None, return_annotation: str | None
) -> tuple[str, str | None] | None:
    """The real signature of a C method, with the stub's types on its
    parameters; a warning when the stub and the real method disagree."""
    key = _native_key(obj)
    if key is None or signature is None:
        return None
    definition = STUB_FUNCTIONS.get(key)
    if definition is None:
        log.warning("%s: shmring._core.%s is not in the stub", name, key, location=str(STUB))
        return None
    real = inspect.signature(obj)
    real_parameters = list(real.parameters.values())
    if getattr(obj, "__objclass__", None) is not None:
        real_parameters = real_parameters[1:]  # self
    stub = _stub_parameters(definition)
    if [(p.name, p.kind) for p in real_parameters] != [(n, k) for n, k, _ in stub]:
        log.warning(
            "%s: the stub's parameters %s are not the real ones %s",
            name, [(n, k.description) for n, k, _ in stub], [(p.name, p.kind.description) for p in real_parameters],
            location=f"{STUB}:{definition.lineno}",
        )
        return None
    annotations = {n: a for n, _, a in stub}
    typed = [p.replace(annotation=annotations[p.name] or inspect.Parameter.empty) for p in real_parameters]
    text = str(real.replace(parameters=typed, return_annotation=inspect.Signature.empty))
    # inspect quotes string annotations; they are already source text.
    for annotation in filter(None, annotations.values()):
        text = text.replace(repr(annotation), annotation)
    returns = None if definition.returns is None else ast.unparse(definition.returns)
    return text, returns


# -- references to shmring's own names must resolve ---------------------------

def _documented_on_purpose_without_a_page(target: str) -> bool:
    """A private name (``shmring.sync._Recovering``, the context manager that
    ``Mutex.recovering()`` returns) or a type variable (``shmring._generic.T``,
    the item type of ``Queue[T]``) that appears in a public signature: neither
    has an entry of its own by design.  Any other shmring name must have one."""
    parts = target.split(".")
    if any(part.startswith("_") for part in parts[1:]) and not target.startswith("shmring._core."):
        return True
    obj: Any = None
    try:
        obj = importlib.import_module(".".join(parts[:2])) if len(parts) > 1 else shmring
        for part in parts[2:]:
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, TypeVar)


def check_own_reference(app: Sphinx, env: Any, node: addnodes.pending_xref, contnode: nodes.Element) -> None:
    """Warn about a Python reference to a shmring name that resolves to
    nothing (a renamed class, a typo in a docstring's :class:`...`)."""
    if node.get("refdomain") != "py":
        return
    target = str(node.get("reftarget", ""))
    bare = target.split(".", 1)[0]
    if _documented_on_purpose_without_a_page(target):
        return
    if target == "shmring" or target.startswith("shmring.") or bare in shmring.__all__:
        log.warning("reference to %s resolves to nothing", target, location=node)


def _refused_constructor(cls: type) -> bool:
    """Whether ``cls(...)`` is refused whatever its arguments: an ``__init__``
    of shmring's that takes only ``*args, **kwargs`` (and raises, saying to
    use ``create``/``open``)."""
    init = cls.__dict__.get("__init__")
    if init is None or not inspect.isfunction(init):
        return False
    kinds = [p.kind for p in list(inspect.signature(init).parameters.values())[1:]]
    return kinds == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]


def plain_class_signature(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, signature: str | None, return_annotation: str | None
) -> tuple[str, str | None] | None:
    """No ``(*_, **__)`` after a class whose constructor refuses every call:
    it would read as "takes anything"; its docstring says how to make one."""
    if what == "class" and isinstance(obj, type) and _refused_constructor(obj):
        return "", None
    return None


def skip_refused_member(app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any) -> bool | None:
    """Leave out a class attribute that refuses to be read: a descriptor
    whose ``__get__`` raises AttributeError hides the name on that class (a
    Publisher's ``recv``, a Subscription's ``send``: the other role's
    methods), so it is not a member to list."""
    getter = getattr(type(obj), "__get__", None)
    if getter is None:
        return None
    try:
        getter(obj, None, object)  # what reading it on a class does
    except AttributeError:
        return True
    except Exception:
        return None
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    # 400: before the download collector (500) reads the page's downloads.
    app.connect("doctree-read", link_repository_files, priority=400)
    app.connect("autodoc-process-signature", typed_native_signature)
    app.connect("autodoc-process-signature", plain_class_signature)
    app.connect("doctree-read", typed_native_attributes)
    app.connect("autodoc-skip-member", skip_refused_member)
    app.connect("missing-reference", check_own_reference, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
