"""A nasty text corpus for tokenizer tests: everything that has broken a pre-tokenizer somewhere.

`corpus()` is deterministic (seeded); each sample is a str without lone surrogates and under 25,000 chars (so the
reference tokenizers need no slicing); `long_samples()` are the ones that exercise Meta's slicing.
"""
import random

PROSE = """\
It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness...
The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! Don't you think so? I'LL be there; We'Re late.
She said: "I'd've gone if I'd known." They're here, you're there, it's 5 o'clock — isn't it? Y'all'd've.
Mr. O'Neill's café serves crème brûlée & naïve piñatas (ﬁne ligatures) at 3.14159 €/kg, ca. 1,000,000 ¥.
"""

CODE = '''\
def encode(self, text: str, *, bos: bool = False) -> list[int]:
    """Docstring with 'quotes' and "double quotes"."""
    if not text:\r\n        return []
\tfor i in range(0, len(text), 400_000):  # tabs\tand spaces
        x = {"a": [1, 2, 3], 'b': (4.5e-10, -0x1F, 0b1010)}
        y = x["a"][::-1] if x else None;; z = a->b && c || !d
#include <stdio.h>
int main(void) { printf("%d\\n", 42); return 0; }
    <div class="x">&nbsp;&lt;tag&gt;</div>  <!-- comment -->
SELECT * FROM t WHERE a >= 10 AND b <> 'x';   -- sql
| col1 | col2 |\n|------|------|\n| 1    | 2    |
https://example.com/path?q=1&r=%20#frag  user@example.org
'''

SAMPLES = [
    "", " ", "  ", "\n", "\n\n", "\r\n", "\r", "\t", "a", "A", "1", "'", "''", "'s", "'S", "'ſ", "'ſs",
    "This is a test sentence.", "Hello, world!", " Hello", "  Hello", "Hello ", "Hello  ", "Hello\n", "Hello \n",
    # digits
    "1234567890" * 5, "12", "123", "1234", "3.14159265358979", "1,000,000", "000", "0x1F", "v1.2.3-rc4",
    "١٢٣٤٥٦٧٨٩٠", "²³¹", "ⅫⅣⅸ", "½¾", "১২৩", "๑๒๓", "a1b22c333d4444", " 1 22 333 4444 ", "x²+y²=z²",
    # whitespace runs and newlines
    "a b", "a  b", "a   b", "a    b", "a\tb", "a\t\tb", "a \tb", "a\t b", "a \n b", "a\n\nb", "a\r\n\r\nb",
    "a \r\n b", "a\n \n b", "   leading", "trailing   ", " \n \n ", "\n\n\n\n", " \t \t ", "x\n\t\ty", "x  \n",
    "line1\nline2\r\nline3\rline4", "\r\r\n\n", "a,\n\nb", "a!\n\n", "a!  \n", "a! \n\n b", "{\n  \"k\": 1\n}\n",
    # contractions in every case, and look-alikes
    "I'LL", "We'Re", "don't", "DON'T", "it's", "IT'S", "y'all", "'s'S'ſ'sx", "'Ll", "'lL", "'VE", "'ve", "'D",
    "'M", "'re", "''s", "' s", "'ſt", "'tis", "rock'n'roll", "o'clock", "l'été", "'ll've'd", "x'S", "X'LLX",
    "it’s", "it‘s", "itʼs", "it＇s", "it´s", "it`s", "it″s", "'K", "'\u212aK", "'İ", "'ı", "'ß", "'ﬅ",
    # scripts
    "漢字かなカナ、。「」 日本語のテキスト", "中文文本，包括标点符号。", "한국어 텍스트입니다", "العربية: مرحبا بالعالم ١٢٣",
    "עברית עם ניקוד: שָׁלוֹם", "हिन्दी पाठ देवनागरी", "ไทยไม่มีช่องว่าง", "Ελληνικά κείμενο", "Русский текст, ёЁ",
    "ქართული", "አማርኛ", "ᚠᚢᚦᚨᚱᚲ", "𝕳𝖊𝖑𝖑𝖔 𝓦𝓸𝓻𝓵𝓭", "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ", "𓀀𓀁𓀂", "𐍈𐌰𐌹",
    # emoji, ZWJ, flags, keycaps, variation selectors
    "👨‍👩‍👧‍👦 family", "👍🏽👍🏿", "🇺🇸🇯🇵🏳️‍🌈", "1️⃣2️⃣#️⃣", "❤️❤︎", "🧑🏻‍💻 coding", "😀😃😄😁", "a😀b", " 😀",
    # combining marks
    "e\u0301", "a\u0308\u0301b", "Z\u0351\u0358\u035aa\u0300\u0301l\u0302g\u0303o\u0304", "\u0301start", "x \u0301",
    "n\u0303o\u0308", "\u093f\u0915", "க்ஷ",
    # unicode whitespace: White_Space (regex \s) and Python's isspace differ on U+001C..U+001F
    "x\u00a0y", "\u00a0\u00a0x", "x\u3000\u3000y", " \u2028 ", "a\u2029b", "\u0085\n", "a\u1680b", "a\u2000\u200ab",
    "a\u202fb", "a\u205fb", "a\u000bb", "a\u000cb", "a\u001cb\u001dc\u001ed\u001fe", "a\u200bb", "a\ufeffb",
    "a\u180eb", "\u00a0", "\u3000", "\u2028", " \u00a0 x", "\u00a0\nx", "\t\u00a0x", "x\u00a0\u00a0", "\u2003word",
    # code points assigned in Unicode 15.0 - 16.0 (letters and digits to tiktoken, unassigned to Python 3.11)
    "a\U00031350b", "\U0002ebf0\U0002ebf1", "\U0001e5d0x", "1\U0001e5f12", "\U00011f50\U00011f51", " \U0001e030",
    # control, private use, noncharacters, unassigned
    "\x00\x01\x02\x7f", "a\x00b", "\ue000\uf8ff", "\U000f0000\U0010fffd", "\ufdd0\ufffe\uffff", "\U0010ffff",
    "\u0378\u0379", "\U000e0001\U000e0020",
    # special token text (plain text unless allowed)
    "<|begin_of_text|>", "<|eot_id|>hi", "a<|start_header_id|>user<|end_header_id|>\n\nb<|eot_id|>",
    "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>", "<|reserved_special_token_250|>", "<|eot_id", "<|eot_id|",
    "<|eot_id|><|eot_id|>", "x<|python_tag|>y", "<repo_name>x<file_sep>",
    PROSE, CODE, PROSE * 3 + CODE * 2,
]

# characters that make the pre-tokenizer branches meet each other, for random mixes
INTERESTING = list("aZ1 \t\n\r'’!.,-_\"(") + ["s", "S", "t", "ll", "LL", "re", "Ve", "d", "M", "ſ"] + list(
    "\u00a0\u2028\u3000\u1680\u0085\u000b\u001c漢字é\u0301😀‍🏽١²ⅫΩж\ue000\x00\u0378") + ["\U0001e5d0", "\U0001e5f1"]


def _random_char(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.35:
        c = rng.randrange(0x20, 0x7F)
    elif r < 0.55:
        c = rng.randrange(0x80, 0x3000)
    elif r < 0.75:
        c = rng.randrange(0x3000, 0x10000)
    else:
        c = rng.randrange(0x10000, 0x110000)
    if 0xD800 <= c < 0xE000:
        c = 0xFFFD
    return chr(c)


def random_strings(seed: int, n: int, max_len: int = 60):
    """n strings: random code points from every plane (assigned or not), and random mixes of INTERESTING."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randrange(max_len)
        if i % 2:
            out.append("".join(_random_char(rng) for _ in range(k)))
        else:
            out.append("".join(rng.choice(INTERESTING) for _ in range(k)))
    return out


def corpus(seed: int = 1234, n_random: int = 1500):
    return SAMPLES + random_strings(seed, n_random)


def long_samples():
    """Texts over 25,000 chars: Meta slices them (runs over 25,000 (non-)whitespace chars, 400,000-char windows)."""
    return [
        "ab!" * 9000,  # 27,000 non-space chars in a row: one cut at 25,000
        "x" + " " * 25_010 + "y",  # a whitespace run over the limit
        ("word " * 3000 + "z" * 25_005 + "\n") * 2,
        (PROSE + CODE) * 350,  # > 400,000 chars: two windows
        "1" * 26_000,
        "\u00a0" * 12_000 + "\u001c" * 14_000 + "q",  # NBSP is space to both; U+001C is a space only to Python
    ]
