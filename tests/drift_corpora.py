"""Small generated corpora for the drift calibration tests and bench/drift.py (generated, so nothing is downloaded
and there is no licence to carry): the demo's arithmetic prompts, kitchen questions (a richer vocabulary and varied
lengths, the in-distribution case that can fail), and IT-support questions (another domain)."""

from __future__ import annotations

import random

from backend.demo import demo_records

_FOODS = "rice pasta bread chicken salmon tofu lentils potatoes carrots spinach mushrooms eggs beef beans".split()
_INGREDIENTS = "butter garlic onion basil thyme lemon honey yoghurt cream flour sugar salt pepper ginger cumin".split()
_VERBS = "bake roast boil steam fry grill simmer marinate freeze reheat".split()
_ADJECTIVES = "quick healthy spicy cheap vegetarian creamy crispy light hearty simple".split()
_MEALS = "breakfast lunch dinner picnic brunch".split()
_CONDITIONS = "out overnight in the fridge for a week in the freezer for months at room temperature".split(" for ")
_KITCHEN = (
    "How long should I {verb} the {food}?",
    "How long should I {verb} {food} at {n}0 degrees before it is done?",
    "Give me a {adj} recipe for {food} with {ing} and {ing2}.",
    "What can I use instead of {ing} when I {verb} {food}?",
    "Is it safe to {verb} {food} that was left {cond}?",
    "Suggest a {adj} {meal} menu for {n} people who like {food} and {food2}.",
    "Why does my {food} get soggy when I {verb} it with {ing}?",
    "Can I {verb} {food} and {food2} together, and should I add {ing} first or later?",
    "Which goes better with {food}: {ing} or {ing2}?",
    "My {food} tastes bland; how much {ing} should I add for {n} servings?",
)

_DEVICES = "laptop printer router phone monitor keyboard server tablet VPN mailbox".split()
_ACTIONS = "updated the driver|restarted it|changed my password|installed the patch|plugged in a dock|moved offices"
_ERRORS = "0x80070005 404 timeout E102 blue-screen certificate-expired disk-full".split()
_SUPPORT = (
    "My {device} shows error {err} after I {action}; how do I fix it?",
    "The {device} will not connect to the network since I {action}.",
    "How do I reset the {device} to factory settings without losing data?",
    "Ticket: the {device} keeps rebooting, error {err}, urgent for the finance team.",
    "Who approves a replacement {device} and how long does procurement take?",
    "Since I {action} my {device} is very slow and the fan is loud.",
)


def arithmetic(n: int, seed: int) -> list[str]:
    return [r["instruction"] for r in demo_records(n, seed=seed)]


def kitchen(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        food, food2 = rng.sample(_FOODS, 2)
        ing, ing2 = rng.sample(_INGREDIENTS, 2)
        out.append(
            rng.choice(_KITCHEN).format(
                verb=rng.choice(_VERBS),
                food=food,
                food2=food2,
                ing=ing,
                ing2=ing2,
                adj=rng.choice(_ADJECTIVES),
                meal=rng.choice(_MEALS),
                cond=rng.choice(_CONDITIONS),
                n=rng.randint(2, 9),
            )
        )
    return out


def support(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        rng.choice(_SUPPORT).format(
            device=rng.choice(_DEVICES), err=rng.choice(_ERRORS), action=rng.choice(_ACTIONS.split("|"))
        )
        for _ in range(n)
    ]


def alpaca(prompts: list[str]) -> list[dict[str, str]]:
    """Prompts as an alpaca dataset (what the config repository holds)."""
    return [{"instruction": p, "input": "", "output": "ok"} for p in prompts]
