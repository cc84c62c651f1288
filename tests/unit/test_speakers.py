"""Commands a credential sends for one thing it holds: the subject ends in that thing's id, and a command whose
subject names another is refused (a worker for itself; a join token's claim for its own token)."""

from __future__ import annotations

from contracts.commands import ClaimJoinToken, DeregisterWorker, SubmitJob
from contracts.subjects import Topology
from eventstore.micro import command_subject, endpoint_subject, speaker_mismatch

T = Topology("stoker")
KEY = "U" + "A" * 55


def test_a_claim_goes_to_its_token_s_subject_and_is_refused_on_another() -> None:
    claim = ClaimJoinToken(token_id="01JA", worker_id="w1", worker_key=KEY)
    assert command_subject(T, claim) == "stoker.cmd.join.claim.01JA"
    assert endpoint_subject(T, "join", "claim", ClaimJoinToken) == "stoker.cmd.join.claim.*"
    assert speaker_mismatch("stoker.cmd.join.claim.01JA", claim) is None
    assert speaker_mismatch("stoker.cmd.join.claim.01JB", claim) == "token '01JB' may speak only for itself, not " \
                                                                    "for '01JA'"


def test_a_worker_s_command_still_ends_in_its_id_and_others_in_nothing() -> None:
    leave = DeregisterWorker(worker_id="w1")
    assert command_subject(T, leave) == "stoker.cmd.discovery.deregister.w1"
    assert speaker_mismatch("stoker.cmd.discovery.deregister.w2", leave) is not None
    assert command_subject(T, SubmitJob(workload="noop")) == "stoker.cmd.scheduler.submit"
