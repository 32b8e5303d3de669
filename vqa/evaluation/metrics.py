"""The official metrics of the benchmarks, each as its official code computes it: VQA accuracy (VQA v2, OK-VQA,
VizWiz), TextVQA's accuracy, A-OKVQA's direct-answer and multiple-choice accuracy, GQA's exact match, consistency and
distribution. Each benchmark module (`vqa.data.<name>`) reads its columns and calls these.

VQA accuracy, exactly as the official VQA evaluation code computes it.

Reference: GT-Vision-Lab/VQA `PythonEvaluationTools/vqaEvaluation/vqaEval.py` at commit a013f00 (2021-03-11,
"Fixed processing answers bug"), the current behaviour. Its rules, reproduced here:

- Tabs and newlines become spaces and both sides are stripped, always.
- Punctuation, number-word, article and contraction normalisation is applied to the ten human answers and the
  prediction ONLY when the human answers (after the whitespace step) are not all identical.
- A prediction's accuracy is the mean over the ten leave-one-out subsets of nine humans of
  min(1, matches among those nine / 3).
- Percentages are rounded to 2 decimals with Python 2's `round` (half away from zero), as the official
  Python 2 code does; Python 3's `round` would round exact halves to even.

Older copies of this code (2017) normalised the prediction unconditionally and give different numbers.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from difflib import SequenceMatcher

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
# The official pattern begins with a mistyped lookbehind, `(?!<=\d)`: a lookahead that never fails before a
# period. Net effect: a period is removed unless a digit follows it.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
# The official call is `periodStrip.sub("", text, re.UNICODE)`: the flag lands in `count`, so at most
# re.UNICODE (32) periods are removed.
PERIOD_STRIP_COUNT = int(re.UNICODE)


def normalize_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """Drop a punctuation mark where it touches a space (or the text has a digit,digit), else make it a space."""
    output = text
    has_digit_comma = COMMA_BETWEEN_DIGITS.search(text) is not None
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or has_digit_comma:
            output = output.replace(mark, "")
        else:
            output = output.replace(mark, " ")
    return PERIOD_STRIP.sub("", output, count=PERIOD_STRIP_COUNT)


def process_digit_article(text: str, contractions: Mapping[str, str] = CONTRACTIONS) -> str:
    """Lowercase, number words to digits, articles dropped, contractions restored, single spaces."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(contractions.get(word, word) for word in words)


def comparable_answers(human_answers: Sequence[str]) -> tuple[list[str], bool]:
    """The human answers in the form the official code compares, and whether the full normalisation applies.

    Returns:
        (answers, normalized): whitespace-normalised answers, and with them fully normalised when they are not all
        identical (`normalized` True); a prediction must then be brought to the same form (`comparable_prediction`).
    """
    answers = [normalize_whitespace(answer) for answer in human_answers]
    if len(set(answers)) > 1:
        return [process_digit_article(process_punctuation(answer)) for answer in answers], True
    return answers, False


def comparable_prediction(prediction: str, normalized: bool) -> str:
    """A prediction in the form it is compared in against answers from `comparable_answers`."""
    prediction = normalize_whitespace(prediction)
    return process_digit_article(process_punctuation(prediction)) if normalized else prediction


def accuracy_from_matches(matches: Sequence[bool]) -> float:
    """The mean over the leave-one-out subsets of min(1, matches among the other humans / 3)."""
    total_matches = sum(matches)
    # Leave out each human in turn: the others hold total_matches minus this human's own match.
    return sum(min(1.0, (total_matches - own) / 3) for own in matches) / len(matches)


def question_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """Accuracy in [0, 1] of one prediction against the ten human answers."""
    answers, normalized = comparable_answers(human_answers)
    prediction = comparable_prediction(prediction, normalized)
    return accuracy_from_matches([answer == prediction for answer in answers])


def round_half_away(value: float, digits: int = 2) -> float:
    """Python 2's `round`: the exact binary value rounded half away from zero."""
    quantum = Decimal(1).scaleb(-digits)
    return float(Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class ScoredQuestion:
    question_id: int
    prediction: str
    human_answers: Sequence[str]
    answer_type: str
    question_type: str


def vqa_accuracy(questions: Iterable[ScoredQuestion]) -> dict[str, float | dict[str, float]]:
    """The official tool's `accuracy` dict: `overall`, `perQuestionType`, `perAnswerType`, in percent."""
    overall: list[float] = []
    per_question_type: dict[str, list[float]] = defaultdict(list)
    per_answer_type: dict[str, list[float]] = defaultdict(list)
    for question in questions:
        accuracy = question_accuracy(question.prediction, question.human_answers)
        overall.append(accuracy)
        per_question_type[question.question_type].append(accuracy)
        per_answer_type[question.answer_type].append(accuracy)
    if not overall:
        raise ValueError("vqa_accuracy: no questions to score")

    def percent(values: list[float]) -> float:
        return round_half_away(100 * sum(values) / len(values))

    return {
        "overall": percent(overall),
        "perQuestionType": {name: percent(values) for name, values in per_question_type.items()},
        "perAnswerType": {name: percent(values) for name, values in per_answer_type.items()},
    }


def percent(values: Sequence[float]) -> float:
    """The mean of per-question scores in [0, 1], in percent, unrounded (the rounding, where the official code
    rounds, is the caller's)."""
    if not values:
        raise ValueError("no questions to score")
    return 100 * sum(values) / len(values)


# TextVQA: the EvalAI answer processing of MMF `mmf/utils/m4c_evaluators.py` (EvalAIAnswerProcessor), applied to the
# prediction and to every human answer, always (VQA v2's code applies it only when the human answers differ).


def evalai_normalize(text: str) -> str:
    """EvalAI's processing: lowercase, commas and '?' removed, "'s" split off, then VQA's punctuation, number-word,
    article and contraction rules."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return process_digit_article(process_punctuation(normalize_whitespace(text)))


def textvqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """TextVQA accuracy in [0, 1] of one prediction: both sides through `evalai_normalize`, then the mean over the
    leave-one-out subsets of min(1, matches / 3) (MMF's TextVQAAccuracyEvaluator)."""
    answers = [evalai_normalize(answer) for answer in human_answers]
    prediction = evalai_normalize(prediction)
    return accuracy_from_matches([answer == prediction for answer in answers])


# VizWiz: the VizWiz-VQA API's vqaEval.py (a fork of VQA v2's) and its answerability evaluation.


# The VizWiz API's own contraction table: most restored contractions are spelled with a typographic apostrophe (U+2019),
# and some keys too, as the API's vqaEval.py has them.
VIZWIZ_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn\u2019t\u2019ve", "couldnt\u2019ve": "couldn\u2019t\u2019ve", "didnt": "didn\u2019t",
    "doesnt": "doesn\u2019t", "dont": "don\u2019t", "hadnt": "hadn\u2019t", "hadnt\u2019ve": "hadn\u2019t\u2019ve",
    "hadn'tve": "hadn\u2019t\u2019ve", "hasnt": "hasn\u2019t", "havent": "haven\u2019t", "hed": "he\u2019d",
    "hed\u2019ve": "he\u2019d\u2019ve", "he\u2019dve": "he\u2019d\u2019ve", "hes": "he\u2019s", "howd": "how\u2019d",
    "howll": "how\u2019ll", "hows": "how\u2019s", "Id\u2019ve": "I\u2019d\u2019ve", "I\u2019dve": "I\u2019d\u2019ve",
    "Im": "I\u2019m", "Ive": "I\u2019ve", "isnt": "isn\u2019t", "itd": "it\u2019d",
    "itd\u2019ve": "it\u2019d\u2019ve", "it\u2019dve": "it\u2019d\u2019ve", "itll": "it\u2019ll",
    "let\u2019s": "let\u2019s", "maam": "ma\u2019am", "mightnt": "mightn\u2019t",
    "mightnt\u2019ve": "mightn\u2019t\u2019ve", "mightn\u2019tve": "mightn\u2019t\u2019ve",
    "mightve": "might\u2019ve", "mustnt": "mustn\u2019t", "mustve": "must\u2019ve", "neednt": "needn\u2019t",
    "notve": "not\u2019ve", "oclock": "o\u2019clock", "oughtnt": "oughtn\u2019t",
    "ow\u2019s\u2019at": "\u2019ow\u2019s\u2019at", "\u2019ows\u2019at": "\u2019ow\u2019s\u2019at",
    "\u2019ow\u2019sat": "\u2019ow\u2019s\u2019at", "shant": "shan\u2019t", "shed\u2019ve": "she\u2019d\u2019ve",
    "she\u2019dve": "she\u2019d\u2019ve", "she\u2019s": "she\u2019s", "shouldve": "should\u2019ve",
    "shouldnt": "shouldn\u2019t", "shouldnt\u2019ve": "shouldn\u2019t\u2019ve",
    "shouldn\u2019tve": "shouldn\u2019t\u2019ve", "somebody\u2019d": "somebodyd",
    "somebodyd\u2019ve": "somebody\u2019d\u2019ve", "somebody\u2019dve": "somebody\u2019d\u2019ve",
    "somebodyll": "somebody\u2019ll", "somebodys": "somebody\u2019s", "someoned": "someone\u2019d",
    "someoned\u2019ve": "someone\u2019d\u2019ve", "someone\u2019dve": "someone\u2019d\u2019ve",
    "someonell": "someone\u2019ll", "someones": "someone\u2019s", "somethingd": "something\u2019d",
    "somethingd\u2019ve": "something\u2019d\u2019ve", "something\u2019dve": "something\u2019d\u2019ve",
    "somethingll": "something\u2019ll", "thats": "that\u2019s", "thered": "there\u2019d",
    "thered\u2019ve": "there\u2019d\u2019ve", "there\u2019dve": "there\u2019d\u2019ve", "therere": "there\u2019re",
    "theres": "there\u2019s", "theyd": "they\u2019d", "theyd\u2019ve": "they\u2019d\u2019ve",
    "they\u2019dve": "they\u2019d\u2019ve", "theyll": "they\u2019ll", "theyre": "they\u2019re",
    "theyve": "they\u2019ve", "twas": "\u2019twas", "wasnt": "wasn\u2019t", "wed\u2019ve": "we\u2019d\u2019ve",
    "we\u2019dve": "we\u2019d\u2019ve", "weve": "we've", "werent": "weren\u2019t", "whatll": "what\u2019ll",
    "whatre": "what\u2019re", "whats": "what\u2019s", "whatve": "what\u2019ve", "whens": "when\u2019s",
    "whered": "where\u2019d", "wheres": "where's", "whereve": "where\u2019ve", "whod": "who\u2019d",
    "whod\u2019ve": "who\u2019d\u2019ve", "who\u2019dve": "who\u2019d\u2019ve", "wholl": "who\u2019ll",
    "whos": "who\u2019s", "whove": "who've", "whyll": "why\u2019ll", "whyre": "why\u2019re", "whys": "why\u2019s",
    "wont": "won\u2019t", "wouldve": "would\u2019ve", "wouldnt": "wouldn\u2019t",
    "wouldnt\u2019ve": "wouldn\u2019t\u2019ve", "wouldn\u2019tve": "wouldn\u2019t\u2019ve", "yall": "y\u2019all",
    "yall\u2019ll": "y\u2019all\u2019ll", "y\u2019allll": "y\u2019all\u2019ll",
    "yall\u2019d\u2019ve": "y\u2019all\u2019d\u2019ve", "y\u2019alld\u2019ve": "y\u2019all\u2019d\u2019ve",
    "y\u2019all\u2019dve": "y\u2019all\u2019d\u2019ve", "youd": "you\u2019d", "youd\u2019ve": "you\u2019d\u2019ve",
    "you\u2019dve": "you\u2019d\u2019ve", "youll": "you\u2019ll", "youre": "you\u2019re", "youve": "you\u2019ve",
}  # fmt: skip


def vizwiz_normalize(prediction: str) -> str:
    """The VizWiz API's processing of a prediction: whitespace, VQA's punctuation rules, number words, articles, and
    contractions by `VIZWIZ_CONTRACTIONS`."""
    return process_digit_article(process_punctuation(normalize_whitespace(prediction)), VIZWIZ_CONTRACTIONS)


def vizwiz_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """VizWiz accuracy in [0, 1]: the prediction always normalised (`vizwiz_normalize`), the human answers compared as
    given, then VQA's leave-one-out mean of min(1, matches / 3). "unanswerable" is an answer like any other."""
    prediction = vizwiz_normalize(prediction)
    return accuracy_from_matches([answer == prediction for answer in human_answers])


def average_precision(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """scikit-learn's `average_precision_score` for one positive class: the sum over score thresholds, highest first,
    of (recall gained) x precision, tied scores taken together. None without positives."""
    positives = sum(labels)
    if not positives:
        return None
    ranked = sorted(zip(scores, labels, strict=True), key=lambda pair: -pair[0])
    total, true_positives, seen, previous_recall = 0.0, 0, 0, 0.0
    for index, (score, label) in enumerate(ranked):
        true_positives += label
        seen += 1
        if index + 1 < len(ranked) and ranked[index + 1][0] == score:
            continue  # the threshold takes every question with this score at once
        recall = true_positives / positives
        total += (recall - previous_recall) * true_positives / seen
        previous_recall = recall
    return 100 * total


def f1_score(labels: Sequence[bool], predicted: Sequence[bool]) -> float:
    """F1 of the positive class, in percent (0 when nothing is predicted or labelled positive, as scikit-learn)."""
    true_positives = sum(label and guess for label, guess in zip(labels, predicted, strict=True))
    denominator = sum(labels) + sum(predicted)
    return 100 * 2 * true_positives / denominator if denominator else 0.0


# A-OKVQA: allenai/aokvqa `evaluation/eval_predictions.py`.


def aokvqa_direct_answer_accuracy(prediction: str, direct_answers: Sequence[str]) -> float:
    """min(1, matches / 3) of the prediction against the ten direct answers: exact string matches, no processing at
    all and no leave-one-out averaging."""
    matches = sum(prediction == answer for answer in direct_answers)
    return min(1.0, matches / 3)


def nearest_choice(prediction: str, choices: Sequence[str]) -> str:
    """The choice a generated answer stands for: itself when it is one; otherwise the choice with the highest
    `difflib` similarity ratio of lowercased texts, the first among ties. (The official remap_predictions.py takes the
    nearest choice by averaged GloVe vectors, which no installable package here ships.)"""
    if prediction in choices:
        return prediction
    ratios = [SequenceMatcher(None, prediction.lower(), choice.lower()).ratio() for choice in choices]
    return choices[ratios.index(max(ratios))]


# GQA: the official eval.py of the GQA site (questions1.2 release).


def gqa_steps(operations: Sequence[str]) -> int:
    """eval.py's `getStepsNum`: the program's operations ('select: bird', 'query: name') other than those containing
    'exist', 'query: name' or 'choose name'."""
    return sum(
        not any(word in operation for word in ("exist", "query: name", "choose name")) for operation in operations
    )


def gqa_consistency(correct: Mapping[str, bool], entailed: Mapping[str, Sequence[str]]) -> float | None:
    """eval.py's consistency, over the questions given: for each question answered correctly that entails others
    among them, the fraction of those answered correctly; the mean of these, in percent. None when no correctly
    answered question entails another one of the set.

    Args:
        correct: question id -> whether its prediction is exactly the answer.
        entailed: question id -> the ids it entails (eval.py drops the question's own id from the list).
    """
    scores = []
    for question_id, right in correct.items():
        inferred = [other for other in entailed.get(question_id, ()) if other != question_id and other in correct]
        if right and inferred:
            scores.append(sum(correct[other] for other in inferred) / len(inferred))
    return percent(scores) if scores else None


def gqa_distribution(gold: Sequence[tuple[str | None, str]], predicted: Sequence[str]) -> float:
    """eval.py's distribution score (lower is better): per global group, the chi-square of the predicted counts of
    each gold answer against its gold count, weighted by the group's size, divided by 100. Questions without a
    global group do not count; predicted answers that are not gold answers of the group are ignored.

    Args:
        gold: (global group or None, answer) per question.
        predicted: the prediction per question, in the same order.
    """
    gold_counts: dict[str, Counter[str]] = defaultdict(Counter)
    predicted_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for (group, answer), prediction in zip(gold, predicted, strict=True):
        if group is not None:
            gold_counts[group][answer] += 1
            predicted_counts[group][prediction] += 1
    weighted, total = 0.0, 0
    for group, expected in gold_counts.items():
        score = sum((predicted_counts[group][answer] - count) ** 2 / count for answer, count in expected.items())
        size = sum(expected.values())
        weighted += score * size
        total += size
    return weighted / total / 100 if total else 0.0
