"""Generate the bundled sample pool, the demo pool and query sets (src/dataselect/data/*.jsonl).

``demo_pool.jsonl`` is the sample pool's first 400 rows (it is shuffled, so every kind is there): what
``dataselect demo`` embeds with the bundled causal LM, sized for the demo's 3 minutes on 2 cores.

Written for this project from templates: math word problems (answers computed), small Python coding
tasks (working code), factual QA (capitals, chemistry, planets), writing requests and everyday
advice. Records use all three accepted formats (messages, Alpaca, prompt/completion) so the demo
exercises the reader. Deterministic: ``python scripts/make_sample_pool.py`` rewrites the same files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "dataselect" / "data"
NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam",
         "Maya", "Noor", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq"]
ITEMS = [("apples", 1), ("pencils", 2), ("stickers", 1), ("notebooks", 3), ("marbles", 1), ("cookies", 2),
         ("books", 6), ("tickets", 5), ("shirts", 9), ("plants", 4)]


def math_rows(rng: random.Random, n: int):
    for i in range(n):
        name, other = rng.sample(NAMES, 2)
        item, price = rng.choice(ITEMS)
        kind = i % 5
        if kind == 0:
            a, b = rng.randint(5, 60), rng.randint(2, 30)
            q = f"{name} has {a} {item}. {other} gives {name} {b} more. How many {item} does {name} have now?"
            ans = f"{name} starts with {a} {item} and receives {b} more, so {a} + {b} = {a + b}. The answer is {a + b}."
        elif kind == 1:
            a, b = rng.randint(3, 12), rng.randint(2, 9)
            q = f"Each box holds {a} {item}. {name} buys {b} boxes. How many {item} is that in total?"
            ans = f"There are {b} boxes with {a} {item} each, so {b} x {a} = {a * b}. The answer is {a * b}."
        elif kind == 2:
            a, b = rng.randint(2, 9), rng.randint(2, 12)
            cost = a * b * price
            q = f"{item.capitalize()} cost ${price * b} for a pack of {b}. {name} buys {a} packs. How much does {name} spend?"
            ans = f"One pack costs ${price * b}, and {a} packs cost {a} x {price * b} = ${cost}. The answer is {cost}."
        elif kind == 3:
            total, k = rng.randint(4, 20) * 6, rng.choice([2, 3, 6])
            q = f"{name} shares {total} {item} equally among {k} friends. How many {item} does each friend get?"
            ans = f"Dividing {total} by {k} gives {total // k}, so each friend gets {total // k}. The answer is {total // k}."
        else:
            speed, hours = rng.randint(30, 90), rng.randint(2, 6)
            q = f"A train travels at {speed} km per hour for {hours} hours. How far does it travel?"
            ans = f"Distance is speed times time: {speed} x {hours} = {speed * hours} km. The answer is {speed * hours}."
        yield "math", q, ans


CODE = [
    ("Write a Python function that returns the sum of a list of numbers.",
     "def total(numbers):\n    result = 0\n    for x in numbers:\n        result += x\n    return result"),
    ("Write a Python function that reverses a string.", "def reverse(text):\n    return text[::-1]"),
    ("Write a Python function that checks whether a number is prime.",
     "def is_prime(n):\n    if n < 2:\n        return False\n    for d in range(2, int(n ** 0.5) + 1):\n"
     "        if n % d == 0:\n            return False\n    return True"),
    ("Write a Python function that counts the vowels in a string.",
     "def count_vowels(text):\n    return sum(1 for ch in text.lower() if ch in 'aeiou')"),
    ("Write a Python function that returns the n-th Fibonacci number.",
     "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"),
    ("Write a Python function that removes duplicates from a list while keeping order.",
     "def unique(items):\n    seen = set()\n    out = []\n    for x in items:\n        if x not in seen:\n"
     "            seen.add(x)\n            out.append(x)\n    return out"),
    ("Write a Python function that returns the largest element of a list.",
     "def largest(values):\n    best = values[0]\n    for v in values[1:]:\n        if v > best:\n"
     "            best = v\n    return best"),
    ("Write a Python function that checks whether a string is a palindrome.",
     "def is_palindrome(text):\n    cleaned = ''.join(ch.lower() for ch in text if ch.isalnum())\n"
     "    return cleaned == cleaned[::-1]"),
    ("Write a Python function that computes the factorial of n.",
     "def factorial(n):\n    result = 1\n    for k in range(2, n + 1):\n        result *= k\n    return result"),
    ("Write a Python function that merges two sorted lists into one sorted list.",
     "def merge(a, b):\n    i = j = 0\n    out = []\n    while i < len(a) and j < len(b):\n"
     "        if a[i] <= b[j]:\n            out.append(a[i]); i += 1\n        else:\n"
     "            out.append(b[j]); j += 1\n    return out + a[i:] + b[j:]"),
    ("Write a Python function that counts how often each word appears in a text.",
     "from collections import Counter\n\ndef word_counts(text):\n    return Counter(text.lower().split())"),
    ("Write a Python function that converts Celsius to Fahrenheit.",
     "def to_fahrenheit(celsius):\n    return celsius * 9 / 5 + 32"),
    ("Write a Python function that flattens a list of lists.",
     "def flatten(lists):\n    return [x for inner in lists for x in inner]"),
    ("Write a Python function that returns the indices of two numbers adding up to a target.",
     "def two_sum(nums, target):\n    seen = {}\n    for i, x in enumerate(nums):\n        if target - x in seen:\n"
     "            return seen[target - x], i\n        seen[x] = i\n    return None"),
    ("Write a Python class for a stack with push, pop and peek.",
     "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
     "        self.items.append(x)\n\n    def pop(self):\n        return self.items.pop()\n\n"
     "    def peek(self):\n        return self.items[-1]"),
    ("Write a Python function that reads a text file and returns its number of lines.",
     "def count_lines(path):\n    with open(path) as fh:\n        return sum(1 for _ in fh)"),
]
CODE_PREFIX = ["", "Please ", "Can you ", "I need help: ", "Quick task: "]
CODE_SUFFIX = ["", " Add a short explanation.", " Keep it simple.", " Use plain Python, no libraries.",
               " Include an example call."]


def code_rows(rng: random.Random, n: int):
    for _ in range(n):
        task, code = rng.choice(CODE)
        pre, suf = rng.choice(CODE_PREFIX), rng.choice(CODE_SUFFIX)
        q = (pre + (task[0].lower() + task[1:] if pre else task)).rstrip() + suf
        fn = code.split("def ", 1)[-1].split("(", 1)[0] if "def " in code else "it"
        yield "code", q, f"```python\n{code}\n```\nThe function `{fn}` does what was asked."


FACTS = [
    ("What is the capital of {}?", "The capital of {} is {}.",
     [("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"), ("Brazil", "Brasilia"),
      ("Egypt", "Cairo"), ("Norway", "Oslo"), ("Peru", "Lima"), ("Vietnam", "Hanoi"), ("Australia", "Canberra"),
      ("Portugal", "Lisbon"), ("Ghana", "Accra"), ("Chile", "Santiago"), ("Poland", "Warsaw")]),
    ("What is the chemical symbol of {}?", "The chemical symbol of {} is {}.",
     [("gold", "Au"), ("iron", "Fe"), ("sodium", "Na"), ("potassium", "K"), ("silver", "Ag"), ("lead", "Pb"),
      ("copper", "Cu"), ("tin", "Sn"), ("mercury", "Hg"), ("oxygen", "O")]),
    ("Which planet is known as {}?", "{} refers to {}.",
     [("the Red Planet", "Mars"), ("the largest planet", "Jupiter"), ("the ringed giant", "Saturn"),
      ("the planet closest to the Sun", "Mercury"), ("the hottest planet", "Venus")]),
    ("Who wrote {}?", "{} was written by {}.",
     [("Pride and Prejudice", "Jane Austen"), ("Hamlet", "William Shakespeare"), ("War and Peace", "Leo Tolstoy"),
      ("One Hundred Years of Solitude", "Gabriel Garcia Marquez"), ("Things Fall Apart", "Chinua Achebe")]),
    ("In which continent is {}?", "{} is in {}.",
     [("Mongolia", "Asia"), ("Uruguay", "South America"), ("Morocco", "Africa"), ("Austria", "Europe"),
      ("Fiji", "Oceania"), ("Honduras", "North America")]),
]


def fact_rows(rng: random.Random, n: int):
    for _ in range(n):
        q_t, a_t, pairs = rng.choice(FACTS)
        k, v = rng.choice(pairs)
        yield "factual", q_t.format(k), a_t.format(k[0].upper() + k[1:], v)


TOPICS = ["the ocean", "autumn leaves", "a city at night", "an old lighthouse", "the first snow", "a quiet library",
          "a long train journey", "a summer storm", "a mountain village", "a lost key"]
FORMS = [("Write a short poem about {}.", "Over {t}, the hours drift slow,\nsoft light on everything we know;\n"
          "a breath, a pause, a word unsaid,\nand {t} keeps what time has led."),
         ("Write a haiku about {}.", "Still, {t} waits —\none sound folds into silence,\nthe day turns its page."),
         ("Write the opening paragraph of a story set in {}.", "Nobody noticed when the stranger arrived in {t}. "
          "She carried a single suitcase and a map folded so many times it had gone soft as cloth."),
         ("Describe {} in vivid language for a travel blog.", "Picture {t}: colours that shift with the hour, "
          "a hum of small sounds, and the feeling that you have stepped into somebody's favourite memory.")]
EMAILS = ["ask my manager for a day off", "thank a colleague for their help", "decline a meeting politely",
          "follow up on a job application", "apologise for a late reply", "invite neighbours to a garden party"]


def writing_rows(rng: random.Random, n: int):
    for i in range(n):
        if i % 3 == 2:
            purpose = rng.choice(EMAILS)
            yield ("writing", f"Write a short, polite email to {purpose}.",
                   f"Subject: A quick note\n\nHi,\n\nI am writing to {purpose}. Thank you for your understanding "
                   "and please let me know if anything else is needed.\n\nBest regards")
        else:
            form, text = rng.choice(FORMS)
            t = rng.choice(TOPICS)
            yield "writing", form.format(t), text.format(t=t)


ADVICE = [("How can I sleep better?", "Keep a regular schedule, avoid screens an hour before bed, keep the room "
           "cool and dark, and limit caffeine after noon."),
          ("How do I keep houseplants alive?", "Water when the top soil is dry, give them indirect light, and "
           "use pots with drainage holes."),
          ("Any tips for a job interview?", "Research the company, prepare short stories about your past work, "
           "arrive early, and ask thoughtful questions at the end."),
          ("How can I save money on groceries?", "Plan meals for the week, shop with a list, buy store brands, "
           "and cook larger batches to use leftovers."),
          ("How do I start running?", "Begin with run-walk intervals three times a week, increase time slowly, "
           "and wear comfortable shoes."),
          ("How can I learn a new language faster?", "Practise a little every day, speak early with native "
           "speakers, and review vocabulary with spaced repetition.")]


def advice_rows(rng: random.Random, n: int):
    for _ in range(n):
        q, a = rng.choice(ADVICE)
        yield "advice", rng.choice(["", "Quick question: ", "I wonder: "]) + q, a


def as_record(i: int, kind: str, q: str, a: str, rng: random.Random) -> dict:
    fmt = rng.random()
    rid = f"sample-{i:05d}"
    src = f"synth-{kind}"
    if fmt < 0.5:
        return {"id": rid, "source": src, "messages": [{"role": "user", "content": q},
                                                       {"role": "assistant", "content": a}]}
    if fmt < 0.8:
        return {"id": rid, "source": src, "instruction": q, "input": "", "output": a}
    return {"id": rid, "source": src, "prompt": q, "completion": a}


QUERIES = {
    "math": [("Lena has 14 oranges and buys 9 more. How many oranges does she have?",
              "14 + 9 = 23. The answer is 23."),
             ("A bus carries 35 people on each trip and makes 4 trips. How many people does it carry?",
              "35 x 4 = 140. The answer is 140."),
             ("Tom splits 48 candies equally among 6 children. How many does each child get?",
              "48 / 6 = 8. The answer is 8."),
             ("A car drives 60 km per hour for 3 hours. How far does it go?", "60 x 3 = 180 km. The answer is 180."),
             ("Pens cost $3 each. How much do 7 pens cost?", "7 x 3 = 21. The answer is 21.")],
    "code": [("Write a Python function that returns the minimum of a list.",
              "```python\ndef smallest(values):\n    return min(values)\n```"),
             ("Write a Python function that checks if a list is sorted.",
              "```python\ndef is_sorted(xs):\n    return all(a <= b for a, b in zip(xs, xs[1:]))\n```"),
             ("Implement binary search in Python.",
              "```python\ndef search(xs, target):\n    lo, hi = 0, len(xs) - 1\n    while lo <= hi:\n"
              "        mid = (lo + hi) // 2\n        if xs[mid] == target:\n            return mid\n"
              "        if xs[mid] < target:\n            lo = mid + 1\n        else:\n            hi = mid - 1\n"
              "    return -1\n```"),
             ("Write a Python function that capitalises every word in a sentence.",
              "```python\ndef title_case(s):\n    return ' '.join(w.capitalize() for w in s.split())\n```")],
}


DEMO_ROWS = 400


def main() -> None:
    rng = random.Random(20261122)
    rows = [*math_rows(rng, 420), *code_rows(rng, 360), *fact_rows(rng, 380), *writing_rows(rng, 300),
            *advice_rows(rng, 140)]
    rng.shuffle(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(as_record(i, kind, q, a, rng), ensure_ascii=False) + "\n" for i, (kind, q, a) in enumerate(rows)]
    (OUT / "sample_pool.jsonl").write_text("".join(lines))
    (OUT / "demo_pool.jsonl").write_text("".join(lines[:DEMO_ROWS]))
    with open(OUT / "sample_queries.jsonl", "w") as fh:
        for task, pairs in QUERIES.items():
            for j, (q, a) in enumerate(pairs):
                rec = {"id": f"q-{task}-{j}", "task": task,
                       "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} pool rows and {sum(map(len, QUERIES.values()))} queries to {OUT}")


if __name__ == "__main__":
    main()
