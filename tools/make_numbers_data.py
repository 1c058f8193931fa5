#!/usr/bin/python3
"""Generate the "number words -> digits" translation data (French, German, Spanish).

Usage (from the repository root; needs Debian 12's python3-num2words 0.5.10):

    apt-get install -y python3-num2words
    /usr/bin/python3 tools/make_numbers_data.py

writes ``data/numbers/numbers.tsv`` (20,000 examples per language) and
``data/numbers/numbers_test.tsv`` (1,000 held-out examples per language) and
prints counts and the longest ``words`` field per language.

File format (both files): UTF-8, ``\\n`` line ends, tab-separated, no quoting,
header line ``lang<TAB>words<TAB>digits``, then one example per line::

    fr<TAB>trois cent quarante-deux<TAB>342
    de<TAB>dreihundertzweiundvierzig<TAB>342
    es<TAB>trescientos cuarenta y dos<TAB>342

``lang`` is ``fr``, ``de`` or ``es``; ``words`` is ``num2words(n, lang=lang)``
lowercased, with two misspellings of num2words 0.5.10 corrected by
``correct_spelling`` (Spanish "veintiuno mil" / "... uno mil" -> "veintiún mil"
/ "... un mil"; German "...einstausend" -> "...eintausend"); ``digits`` is
``str(n)`` (no separators, no leading zeros).  Rows of the three languages
are shuffled together.

Sampling, per language: each draw picks a range -- 0..99 with probability
0.1, 0..9,999 with 0.4, 0..999,999 with 0.5 -- and a number uniformly in it;
a number already drawn for that language (or whose words exceed MAX_WORDS
characters) is rejected and the draw repeated (range included), until 21,000
distinct numbers are drawn.  These are shuffled and split: 1,000 to the test
file, 20,000 to the training file, so no (lang, number) pair repeats and the
test numbers of a language never occur in its training rows.  Fixed seed
(SEED); the output is byte-for-byte deterministic.  Standard library +
num2words only.
"""

import os
import random
import re
import sys

import num2words

SEED = 20240611
LANGS = ("fr", "de", "es")
N_TRAIN = 20000  # per language
N_TEST = 1000  # per language
MAX_WORDS = 100  # characters; longer examples are dropped and redrawn
RANGES = ((0.1, 99), (0.4, 9999), (0.5, 999999))  # (probability, max n)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "data", "numbers")


def correct_spelling(lang, words):
    """Fix the known misspellings of num2words 0.5.10 in 0..999,999.

    ``words`` is the lowercased, whitespace-normalised num2words output; the
    corrected string is returned (unchanged for French and for every number
    the rules below do not touch).  The rules were checked against the output
    for every number 0..999,999:

    - Spanish: before ``mil`` the numeral "one" is apocopated -- ``uno``
      becomes ``un`` and ``veintiuno`` becomes ``veintiún`` (as before a
      masculine noun).  num2words writes ``uno mil`` whenever the thousands
      part ends in 1 but is not 1 or ..11 (21, 31, ..., 91, 101, 121, 131,
      ..., 991: "veintiuno mil", "cuarenta y uno mil", "ciento uno mil",
      "doscientos uno mil", "ciento veintiuno mil"); corrected to
      "veintiún mil", "cuarenta y un mil", "ciento un mil", "doscientos un
      mil".  (1,000 itself is plain "mil", so a bare "uno mil" never occurs;
      ``uno`` elsewhere, e.g. "mil uno", is correct and left alone.)
    - German: ``eins`` is only the form of a number *ending* in 1; inside a
      compound it is ``ein``.  num2words writes ``einstausend`` for the
      thousands 101, 201, ..., 901 ("einhunderteinstausend"); corrected to
      ``eintausend`` ("einhunderteintausend").
    """
    if lang == "es":
        words = re.sub(r"\bveintiuno mil\b", "veintiún mil", words)
        words = re.sub(r"\buno mil\b", "un mil", words)
    elif lang == "de":
        words = words.replace("einstausend", "eintausend")
    return words


def words(n, lang):
    w = num2words.num2words(n, lang=lang).lower()
    w = " ".join(w.split())  # no tabs, newlines or doubled spaces
    return correct_spelling(lang, w)


def draw(rng):
    u = rng.random()
    for p, hi in RANGES:
        if u < p:
            return rng.randint(0, hi)
        u -= p
    return rng.randint(0, RANGES[-1][1])


def sample_language(rng, lang, count):
    seen = {}
    dropped_long = 0
    while len(seen) < count:
        n = draw(rng)
        if n in seen:
            continue
        w = words(n, lang)
        if len(w) > MAX_WORDS:
            dropped_long += 1
            continue
        seen[n] = w
    numbers = list(seen)  # insertion (draw) order: deterministic
    rng.shuffle(numbers)
    return [(lang, seen[n], str(n)) for n in numbers], dropped_long


def write_tsv(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("lang\twords\tdigits\n")
        for row in rows:
            for field in row:
                assert field and "\t" not in field and "\n" not in field, row
            f.write("\t".join(row) + "\n")


def band(n):
    return "0..99" if n < 100 else "100..9,999" if n < 10000 else "10,000..999,999"


def main():
    rng = random.Random(SEED)
    train, test = [], []
    for lang in LANGS:
        rows, dropped = sample_language(rng, lang, N_TRAIN + N_TEST)
        test.extend(rows[:N_TEST])
        train.extend(rows[N_TEST:])
        if dropped:
            print(f"{lang}: dropped {dropped} draws longer than {MAX_WORDS} chars")
    rng.shuffle(train)
    rng.shuffle(test)

    # Checks: no repeated (lang, number); test disjoint from train.
    train_keys = {(l, d) for l, _, d in train}
    test_keys = {(l, d) for l, _, d in test}
    assert len(train_keys) == len(train) and len(test_keys) == len(test)
    assert not (train_keys & test_keys)

    os.makedirs(OUT_DIR, exist_ok=True)
    for name, rows in (("numbers.tsv", train), ("numbers_test.tsv", test)):
        path = os.path.join(OUT_DIR, name)
        write_tsv(path, rows)
        print(f"{os.path.relpath(path, ROOT)}: {len(rows)} examples, "
              f"{os.path.getsize(path)} bytes")
        for lang in LANGS:
            sub = [r for r in rows if r[0] == lang]
            longest = max(sub, key=lambda r: (len(r[1]), int(r[2])))
            bands = {}
            for r in sub:
                b = band(int(r[2]))
                bands[b] = bands.get(b, 0) + 1
            print(f"  {lang}: {len(sub)} examples; longest words "
                  f"{len(longest[1])} chars: {longest[1]!r} = {longest[2]}; "
                  f"bands {bands}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
