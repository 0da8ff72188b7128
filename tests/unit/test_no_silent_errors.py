"""An error bpftools survives is logged or reported, never silently dropped: every handler of
`Exception` (or a bare `except:`) in bpftools/ uses the exception it caught (logs it, reports
it, re-raises), and nothing is wrapped in `contextlib.suppress(Exception)`; `errors.survive`
is the way to carry on after an error."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "bpftools"

# Handlers still to be converted; each entry is (path relative to bpftools/, line text).
PENDING = set()


def _catches_everything(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return handler.type is None or any(isinstance(n, ast.Name) and n.id in ("Exception", "BaseException")
                                       for n in names)


def _uses_or_raises(handler: ast.ExceptHandler) -> bool:
    for node in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
        if isinstance(node, ast.Raise):
            return True
        if handler.name and isinstance(node, ast.Name) and node.id == handler.name:
            return True
    return False


def _violations():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ExceptHandler) and _catches_everything(node) and not _uses_or_raises(node):
                line = lines[node.lineno - 1].strip()
                if (rel, line) not in PENDING:
                    yield f"{rel}:{node.lineno}: {line}"
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "suppress"
                    and any(isinstance(a, ast.Name) and a.id == "Exception" for a in node.args)):
                yield f"{rel}:{node.lineno}: contextlib.suppress(Exception)"


def test_no_error_is_silently_dropped():
    found = list(_violations())
    assert not found, "log these errors (errors.survive, or log.debug with the exception):\n" + "\n".join(found)
