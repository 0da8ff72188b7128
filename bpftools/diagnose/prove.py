"""Every fix is proven on the model before it is printed.

A cause comes with candidate fixes (lists of `Command`s), the likeliest first. Each candidate is
applied to a copy of the captured namespaces (`apply_fix.applied`) and the static walk runs
again, both ways: the candidate is proven when the echo request reaches the destination, the
reply comes back, no check on the path fails any more (symptoms such as a FAILED neighbour
entry left over from the failed pings aside) and the condition the cause names is gone.
Candidates are tried in order on top of the fixes proven for the causes before; when one fails
alone it is tried once more with the fixes of the causes after it (two independent faults: each
fix is needed, neither is enough). The first proven candidate becomes the cause's `fix`. None
proven: no fix is printed; a candidate the model cannot apply (a command `apply_fix` does not
know) is kept as `advice`, printed as such, never as a fix; one the kernel would refuse (File
exists, nothing to delete) is neither."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..commands import HOST_LABEL, Command, rendered
from ..errors import survive
from .apply_fix import Refused, Unmodelled, applied
from .records import Cause
from .state import Snapshot
from .walk import Walker, WalkResult

log = logging.getLogger(__name__)

PROGRAM_CHECKS = ("xdp", "tc")   # ok=True notes whose condition (a program on the path) a fix removes


@dataclass
class Trial:
    """What one set of fix commands does to the model."""
    repaired: bool
    unmodelled: str = ""   # the command the model could not apply, and why
    still: str = ""        # where the re-walk still breaks


@dataclass
class Prover:
    snapshot: Snapshot
    src_ns: str
    dst: str
    source: Optional[str] = None
    device: Optional[str] = None
    scope: Optional[str] = None
    payload: int = 56
    home: str = HOST_LABEL

    def walk(self, snapshot: Snapshot) -> WalkResult:
        return Walker(snapshot, self.payload, home=self.home).walk(self.src_ns, self.dst, self.source, self.device,
                                                                  self.scope)

    def trial(self, commands: Sequence[Command], cause: Cause) -> Trial:
        try:
            model = applied(self.snapshot, commands, self.home)
        except Refused as exc:   # it would fail when run: no advice, just not a fix
            return Trial(False, still=f"the kernel would refuse it: {exc}")
        except Unmodelled as exc:
            return Trial(False, unmodelled=str(exc))
        result = Trial(False, still="the walk could not follow the changed model (see --debug)")
        with survive(log, "re-walking the model with %s", rendered(commands), level=logging.WARNING):
            result = judge(self.walk(model), cause)   # a model the walk cannot follow proves nothing
        return result

    def __call__(self, causes: List[Cause]) -> None:
        """Set each cause's `fix`, `proven` and `advice` from its candidates (`ranking.candidates`)."""
        chosen = [(c.ranking.candidates or [[]])[0] for c in causes]
        done: List[Command] = []
        for i, cause in enumerate(causes):
            later = [cmd for fix in chosen[i + 1:] for cmd in fix]
            proof = self.prove_one(cause, done, later)
            if proof is not None:
                done += proof
                chosen[i] = proof
            else:
                chosen[i] = []

    def prove_one(self, cause: Cause, done: List[Command], later: List[Command]) -> Optional[List[Command]]:
        candidates = [c for c in cause.ranking.candidates if c]
        advice: List[Command] = []
        failures: List[str] = []
        for candidate in candidates:
            trial = self.trial(done + candidate, cause)
            if not trial.repaired and later and not trial.unmodelled:
                joint = self.trial(done + candidate + later, cause)   # with the other faults' fixes
                trial = joint if joint.repaired else trial
            if trial.repaired:
                cause.set_fix(candidate, True)
                cause.evidence += [f"not proven: {text}" for text in failures]
                return candidate
            log.debug("%s in %s: candidate %s not proven: %s", cause.cause, cause.netns,
                      rendered(candidate), trial.unmodelled or trial.still)
            if trial.unmodelled:
                advice = advice or candidate
                failures.append(f"{' ; '.join(rendered(candidate))}: cannot be applied to the model "
                                f"({trial.unmodelled})")
            else:
                failures.append(f"{' ; '.join(rendered(candidate))}: on the model the path still breaks "
                                f"({trial.still})")
        cause.set_fix([], False, advice)
        cause.evidence += [f"not proven: {text}" for text in failures]
        return None


def judge(walk: WalkResult, cause: Cause) -> Trial:
    """Does the re-walk show the path repaired, and the cause's condition gone?"""
    if not walk.request_delivered or not walk.reply_delivered:
        stop = next((h for h in reversed(walk.hops) if h.action in ("broken", "leave")), None)
        where = f"{stop.direction} stops in {stop.netns}: {stop.note}" if stop else "the walk does not get through"
        return Trial(False, still=where)
    blocking = [f for f in walk.findings if not f.ok and f.cause and not f.symptom]
    if blocking:
        return Trial(False, still=f"{blocking[0].cause} in {blocking[0].netns}: {blocking[0].detail}")
    same = [f for f in walk.findings if (f.cause, f.netns, f.ifname) == (cause.cause, cause.netns, cause.ifname)
            and (not f.ok or f.check in PROGRAM_CHECKS)]
    if same:
        return Trial(False, still=f"{same[0].detail}")
    return Trial(True)
