"""Questionnaire activities: an activity whose `detail.instantiatesCanonical` names a
Questionnaire is scheduled as Tasks shaped as the SDC IG's questionnaire Tasks (profile
`http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-task`, its invariant sdc-t1; Herald sets
no `requester`), so a patient's app knows which form to render from the Task alone: `code` is
SDC's `complete-questionnaire`, one `input` of type `questionnaire` carries the canonical
(`valueCanonical`, its `|version` kept), and there is no `focus`. The app answers with a
QuestionnaireResponse and puts it in the Task's `output` (type `questionnaire-response`) as it
completes the Task; Herald never writes a Task a person moved on, so the answer stays
(scheduler/task.py).

Which canonicals are Questionnaires: `instantiatesCanonical` may also name a PlanDefinition, a
Measure or an OperationDefinition, and the planner reads nothing from the store, so the URL has
to say it: its last two path segments are `Questionnaire/{id}` (the FHIR REST form, as
`http://example.org/fhir/Questionnaire/phq-9|2`). An activity whose `detail.code` is SDC's
`complete-questionnaire` says it for every canonical it names, whatever their URLs (and is
reported when it names none). An SDC Task asks for one questionnaire, so an activity naming
more than one is reported, not guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scheduler.requests import NotScheduled

SDC_TEMP = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp"  # SDC's own codes (Task code, input)
COMPLETE_QUESTIONNAIRE = "complete-questionnaire"
QUESTIONNAIRE_INPUT = "questionnaire"

# Questionnaire/{id}, also after a base URL, with an optional |version (not a fragment).
_QUESTIONNAIRE_CANONICAL = re.compile(r"(?:^|/)Questionnaire/[A-Za-z0-9\-.]{1,64}(?:\|[^|#]+)?$")


def task_code() -> dict[str, Any]:
    """Task.code of a questionnaire Task (SDC's TaskCode value set, required there)."""
    display = "Complete Questionnaire"
    return {"coding": [{"system": SDC_TEMP, "code": COMPLETE_QUESTIONNAIRE, "display": display}]}


def questionnaire_input(canonical: str) -> dict[str, Any]:
    """The Task.input naming the questionnaire to complete (SDC slice `questionnaire`)."""
    return {
        "type": {"coding": [{"system": SDC_TEMP, "code": QUESTIONNAIRE_INPUT}]},
        "valueCanonical": canonical,
    }


def questionnaire_of(detail: Mapping[str, Any]) -> str | None:
    """The canonical of the Questionnaire the activity asks to complete (None: it names none).

    Raises NotScheduled when it names more than one, or is coded `complete-questionnaire`
    and names none.
    """
    canonicals = [c for c in detail.get("instantiatesCanonical") or () if isinstance(c, str)]
    if _asks_for_a_questionnaire(detail.get("code")):
        if not canonicals:
            raise NotScheduled(
                "detail.code asks to complete a questionnaire but detail.instantiatesCanonical"
                " names none: add the Questionnaire's canonical URL"
            )
    else:
        canonicals = [c for c in canonicals if _QUESTIONNAIRE_CANONICAL.search(c)]
    if len(canonicals) > 1:
        raise NotScheduled(
            f"detail.instantiatesCanonical names {len(canonicals)} Questionnaires: a"
            " questionnaire Task asks for one, so write one activity per questionnaire"
        )
    return canonicals[0] if canonicals else None


def _asks_for_a_questionnaire(code: Any) -> bool:
    codings = code.get("coding") if isinstance(code, Mapping) else None
    return any(
        isinstance(coding, Mapping)
        and coding.get("system") == SDC_TEMP
        and coding.get("code") == COMPLETE_QUESTIONNAIRE
        for coding in codings or ()
    )
