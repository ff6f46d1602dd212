"""A model as the judge of a benchmark's answers: a scorer for the runner.

Contract
--------
- :class:`ModelJudge` is a :class:`~everyskill.benchmark_runner.CaseScorer`:
  ``score_case(case, output)`` asks ``model`` (through ``client``, any
  :class:`~everyskill.providers.JsonModelClient`: an
  :class:`~everyskill.providers.AnthropicClient`, an
  :class:`~everyskill.providers.OpenAIClient` or a
  :class:`~everyskill.providers.ModelRouter`) to grade ``output`` as an
  answer to the case's input, against its expected output, on the 0-100
  rubric of :data:`RUBRIC`.
- It is blinded: its prompt holds the task, the expected answer and the
  answer to grade, and nothing else: not the name of the model that
  answered, nor its provider, nor the skill's text. (An answer that names
  its own model still says so: the judge reads answers as they are.)
- Its verdict is structured output: a JSON object matching
  :class:`Verdict` (``reason``, then ``score`` 0-100, then ``matches``),
  asked for with the provider's JSON-schema output. The score is the
  result's quality, ``matches`` whether the answer is right (None when the
  case has no expected output: the answer is then graded on the task
  alone), and the reason is the result's ``quality_notes``, prefixed with
  ``judge <model>:``.
- Its own call is in :attr:`Score.calls <everyskill.benchmark_runner.Score.calls>`
  (provider, model, tokens, latency), so the runner records it as a token
  measurement of the run and the run's cost includes the judging
  (:func:`everyskill.benchmarks.run_cost`).
- A judge that fails does not stop the run: a call that fails (after the
  client's retries) gives no quality and notes ``not judged: <error>``
  (nothing known billed, no call recorded); a verdict that does not match
  the schema (not JSON, a score outside 0-100, a missing field) gives no
  quality and notes ``not judged: the verdict ...``, and its call (billed)
  is recorded.
- :func:`~everyskill.benchmark_runner.default_scorer` stays the offline
  default of the runner; a judge is chosen by passing it as ``scorer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pydantic

from everyskill.benchmark_runner import Score, ScorerCall, TestCase
from everyskill.errors import ValidationError
from everyskill.providers import JsonModelClient, ModelCallError

__all__ = ["RUBRIC", "ModelJudge", "Verdict", "judge_prompt"]

#: The judge's instructions (its system prompt).
RUBRIC = """\
You grade one answer to a task, comparing it with the expected answer when
one is given. You do not know who or what wrote the answer; judge only what
it says.

Score from 0 to 100:
- 100: correct and complete; equivalent to the expected answer (wording,
  format and length may differ).
- 75-99: correct, with small omissions, extra material or imprecision that
  do not change its meaning.
- 50-74: partly correct: the main point is there but with a real error or
  a missing part.
- 25-49: mostly wrong, with some relevant and correct content.
- 1-24: wrong or misleading.
- 0: no answer, a refusal, or off the task.

Without an expected answer, grade how well the answer does the task.
Set "matches" to true when the answer is right (score 75 or more against
the expected answer), else false. Give your reason first, in one to three
sentences, then the score."""


class Verdict(pydantic.BaseModel):
    """The judge's structured answer."""

    # A closed object with every field required: what strict JSON-schema
    # output (OpenAI's) accepts. The range of the score is checked here,
    # as not every provider constrains numbers.
    model_config = pydantic.ConfigDict(extra="forbid")

    reason: str = pydantic.Field(description="Why this score, in one to three sentences.")
    score: int = pydantic.Field(description="The grade, from 0 to 100.", ge=0, le=100)
    matches: bool = pydantic.Field(description="Whether the answer is right.")


def _schema() -> dict[str, Any]:
    schema = Verdict.model_json_schema()
    # The bounds are said in the description (and checked on the answer):
    # strict schemas of some providers refuse numeric bounds.
    schema["properties"]["score"].pop("minimum", None)
    schema["properties"]["score"].pop("maximum", None)
    return schema


_SCHEMA = _schema()


def judge_prompt(case: TestCase, output: str) -> str:
    """The judge's user message for ``output`` as the answer to ``case``:
    the task, the expected answer (when known), the answer; nothing else."""
    parts = [f"<task>\n{case.input}\n</task>"]
    if case.expected_output is not None:
        parts.append(f"<expected_answer>\n{case.expected_output}\n</expected_answer>")
    parts.append(f"<answer>\n{output}\n</answer>")
    return "\n\n".join(parts)


@dataclass
class ModelJudge:
    """Grades answers with ``model``; see the module's contract."""

    client: JsonModelClient
    model: str
    rubric: str = RUBRIC
    #: The most tokens the verdict may take.
    max_tokens: int = 1024

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValidationError.of("judge", "name the judge's model")
        if not isinstance(self.client, JsonModelClient):
            raise ValidationError.of("client", "must be a client that asks for JSON answers")
        self.model = self.model.strip()

    async def score_case(self, case: TestCase, output: str, /) -> Score:
        """The judge's score of ``output`` as the answer to ``case``."""
        try:
            completion = await self.client.complete_json(
                self.model,
                judge_prompt(case, output),
                system=self.rubric,
                schema_name="verdict",
                schema=_SCHEMA,
                max_tokens=self.max_tokens,
            )
        except ModelCallError as error:
            return Score(None, None, f"not judged: {type(error).__name__}: {error}")
        call = ScorerCall(
            model_provider=self.client.provider_of(self.model),
            model_name=self.model,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            cache_read_tokens=completion.cache_read_tokens,
            cache_write_tokens=completion.cache_write_tokens,
            latency_ms=completion.latency_ms,
        )
        try:
            verdict = Verdict.model_validate_json(completion.output)
        except pydantic.ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in detail['loc']) or 'verdict'}: {detail['msg']}"
                for detail in error.errors(include_url=False)
            )
            return Score(
                None, None, f"not judged: the verdict does not match its schema ({problems})", (call,)
            )
        matches = verdict.matches if case.expected_output is not None else None
        return Score(verdict.score, matches, f"judge {self.model}: {verdict.reason}", (call,))
