"""The package's structural rules, read from the source: no import circle in backbones/ (no
function-local imports holding one together), no upward arrow from backbones/, networks/ and nnunet/, no branch on
an adaptation mode's name outside the mode objects, one reader of nnU-Net's folder variables and one
spelling of the plugin's own, no private name of timm."""
import ast
import os
import re

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nnunet_dino")


def _modules(folder):
    root = os.path.join(PACKAGE, folder)
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, PACKAGE), ast.parse(open(path).read())


def _relative_imports(tree, top_level_only):
    nodes = tree.body if top_level_only else ast.walk(tree)
    return [n for n in nodes if isinstance(n, ast.ImportFrom) and n.level > 0]


def _sibling(module_path, node):
    """The backbones/ module a relative import names (None outside backbones/)."""
    if node.level != 1:
        return None
    package = os.path.dirname(module_path)
    target = (node.module or "").split(".")[0]
    return f"{package}/{target}.py" if target else None


def test_backbones_import_each_other_at_the_top_only_and_without_a_circle():
    modules = dict(_modules("backbones"))
    local = [(path, n.module) for path, tree in modules.items() for fn in ast.walk(tree)
             if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(fn) if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert local == [], local
    graph = {path: {t for n in _relative_imports(tree, True) if (t := _sibling(path, n)) in modules}
             for path, tree in modules.items() if not path.endswith("__init__.py")}
    done, stack = set(), []

    def visit(node):
        assert node not in stack, " -> ".join(stack[stack.index(node):] + [node])
        if node in done:
            return
        stack.append(node)
        for nxt in graph.get(node, ()):
            visit(nxt)
        stack.pop()
        done.add(node)
    for node in graph:
        visit(node)


_ABOVE_NNUNET = ("training", "bench", "commands", "crossval", "prediction", "demo", "cli")


@pytest.mark.parametrize("folder, upward", [("backbones", _ABOVE_NNUNET + ("nnunet",)),
                                            ("networks", _ABOVE_NNUNET + ("nnunet",)),
                                            ("nnunet", _ABOVE_NNUNET)])
def test_no_upward_arrow(folder, upward):
    found = [(path, "." * n.level + (n.module or "")) for path, tree in _modules(folder)
             for n in _relative_imports(tree, False) if (n.module or "").split(".")[0] in upward]
    assert found == [], found


def test_no_module_branches_on_an_adaptation_mode_name():
    names = "|".join(("frozen", "lora", "last_k", "full"))
    branch = re.compile(rf"""(adaptation\.mode\s*(==|!=|\bin\b))|((==|!=|\bin\s*\(?)\s*["']({names})["'])""")
    found = [(path, line.strip()) for path, _ in _modules("") if not path.startswith("backbones/modes/")
             for line in open(os.path.join(PACKAGE, path)) if branch.search(line)]
    assert found == [], found


def test_nnunet_folder_variables_have_one_reader_and_the_plugin_variables_one_spelling():
    read = re.compile(r"""environ(\.get)?[\[(]\s*["']nnUNet_(raw|preprocessed|results)["']""")
    readers = {path for path, _ in _modules("") for line in open(os.path.join(PACKAGE, path)) if read.search(line)}
    assert readers <= {"nnunet/folders.py", "datasets/colin27.py"}, readers  # colin27: a hint, not a path
    old = {path for path, _ in _modules("") for line in open(os.path.join(PACKAGE, path)) if "NNUNET_DINO_" in line}
    assert old == {"environment.py"}, old


def test_the_old_spelling_of_a_plugin_variable_is_still_read_with_one_deprecation_line(capsys):
    from nnunet_dino import environment
    assert environment.get(environment.MRICRON_DIR, environ={"nnUNet_dino_mricron_dir": "/new"}) == "/new"
    for _ in range(2):
        assert environment.get(environment.MRICRON_DIR, environ={"NNUNET_DINO_MRICRON_DIR": "/old"}) == "/old"
    assert capsys.readouterr().err == ("nnunet-dino: NNUNET_DINO_MRICRON_DIR is deprecated, "
                                       "set nnUNet_dino_mricron_dir instead\n")  # once
    assert environment.get(environment.MRICRON_DIR, "none", environ={}) == "none"


@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_unset_nnunet_raw_is_an_error_never_a_relative_path(value, monkeypatch):
    from nnunet_dino.errors import MissingInputError
    from nnunet_dino.nnunet.folders import raw_root
    from nnunet_dino.pretrain.data import _raw_cases
    if value is None:
        monkeypatch.delenv("nnUNet_raw", raising=False)
    else:
        monkeypatch.setenv("nnUNet_raw", value)
    for call in (raw_root, lambda: _raw_cases("Dataset990_Synth2D")):
        with pytest.raises(MissingInputError, match="nnUNet_raw is not set: export nnUNet_raw"):
            call()
    assert raw_root("/given") == "/given"


def test_no_private_timm_name_is_used():
    """timm's public surface only (documentation/extending.md, "timm: public and private"): no underscore
    attribute of a timm ViT, block or RoPE module, and no underscore name imported from timm."""
    timm_objects = re.compile(r"\b(vit|rope|block|blk|blocks)\b")
    found = []
    for folder in ("backbones", "networks"):
        for path, tree in _modules(folder):
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                        and timm_objects.search(ast.unparse(node.value))):
                    found.append(f"{path}:{node.lineno} {ast.unparse(node)}")
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("timm"):
                    found += [f"{path}:{node.lineno} {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not found, found
