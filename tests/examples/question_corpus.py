"""Questions for testing question tokenizers outside Python (the web page's): real VQA-style
questions in many scripts, the easy-VQA data set's own questions where the package is
installed, generated sentences in 16 locales (Faker's word lists) asked as questions, and
the inputs that break tokenizers (accents, CJK, emoji, control and zero-width characters,
special tokens, empty and over-long strings)."""

from __future__ import annotations

import random

# Written for this corpus: what people ask about photos, in the scripts phones are used in
QUESTIONS = {
    "en": [
        "How many cats are there?",
        "What color is the small dog sitting on the red sofa?",
        "Is the man wearing a hat?",
        "What is the woman holding in her left hand?",
        "What time does the clock show?",
        "What's written on the sign above the door?",
        "Isn't the giraffe taller than the tree?",
        "Is the price $4.99 or €5,50?",
        "How old is the boy: 5, 10 or 15?",
        "Does the bus say \"Downtown\" or 'Airport'?",
    ],
    "fr": [
        "Combien de chats y a-t-il ?",
        "De quelle couleur est la voiture ?",
        "Où est le café ? Crème brûlée à la française.",
        "Qu'est-ce que l'enfant tient dans sa main ?",
    ],
    "es": [
        "¿Cuántas personas hay en la foto?",
        "¿Dónde está el niño? ¡En la montaña!",
        "¿De qué color es el coche?",
        "¿Qué está comiendo el perro?",
    ],
    "de": [
        "Wie viele Äpfel liegen auf dem Tisch?",
        "Über die Brücke: welche Straße ist das?",
        "Ist das Fenster geöffnet?",
        "Welche Farbe hat der Schlüssel?",
    ],
    "pt": [
        "Quantos pássaros estão na árvore?",
        "O que está acontecendo na praça de São Paulo?",
        "A criança está feliz?",
    ],
    "tr": ["İstanbul'da hangi köprü görünüyor?", "Kaç tane kedi var?", "Adamın şapkası ne renk?"],
    "pl": ["Ile osób jest na zdjęciu?", "Jakiego koloru jest łódź w Łodzi?"],
    "cs": ["Kolik psů je na obrázku?", "Hraje Dvořák na housle?"],
    "vi": ["Có bao nhiêu con mèo trong ảnh?", "Chiếc xe màu gì?", "Người đàn ông đang làm gì?"],
    "ru": ["Сколько кошек на фотографии?", "Какого цвета машина?", "Москва или Київ?", "Что держит девочка в руке?"],
    "uk": ["Скільки людей на фото?", "Якого кольору небо?"],
    "el": [
        "Πόσες γάτες υπάρχουν;",
        "ΤΙ ΧΡΩΜΑ ΕΧΕΙ Ο ΟΥΡΑΝΟΣ;",
        "Ποια οδός; Η σοφία της Αθήνας.",
        "ΠΟΣΟΙ ΑΝΘΡΩΠΟΙ ΚΑΘΟΝΤΑΙ ΣΤΟΝ ΚΑΝΑΠΕ;",
    ],
    "ar": ["كم عدد القطط في الصورة؟", "ما لون السيارة؟", "ماذا يحمل الرجل؟"],
    "he": ["כמה חתולים יש בתמונה?", "מה צבע המכונית?"],
    "fa": ["چند گربه در عکس هست؟", "رنگ آسمان چیست؟"],
    "hi": ["तस्वीर में कितनी बिल्लियाँ हैं?", "कार किस रंग की है?"],
    "bn": ["ছবিতে কয়টি বিড়াল আছে?", "গাড়িটি কোন রঙের?"],
    "th": ["ในภาพมีแมวกี่ตัว?", "รถสีอะไร?"],
    "zh": ["这是什么动物？", "图片里有几只猫？", "桌子上放着什么？", "這輛車是什麼顏色的？"],
    "ja": ["写真に猫は何匹いますか？", "日本語のテキスト、東京。この車は何色ですか？", "男の人は何を持っていますか？"],
    "ko": ["사진에 고양이가 몇 마리 있나요?", "한국어 문장입니다. 자동차는 무슨 색인가요?"],
    "hy": ["Քանի՞ կատու կա նկարում:"],
    "ka": ["რამდენი კატაა სურათზე?"],
    "am": ["በፎቶው ውስጥ ስንት ድመቶች አሉ?"],
}

EDGE_CASES = [
    "",
    " ",
    "   \t\n  ",
    "?",
    "emoji 😀 🐱 👍🏽 👨‍👩‍👧 ❤️ ok?",
    "🐈🐈🐈?",
    "tabs\tand\nnewlines\r\nand   many    spaces",
    "\x00\x01\x7f\u200b\ufeff\ufffd",
    "zero\u200bwidth joiner\u200dand soft\u00adhyphen",
    "nbsp\u00a0ideographic\u3000space\u2003em\u2028line\u2029para\x85nel",
    "combining: e\u0301 a\u0308 n\u0303 o\u0328\u0301 \u0300\u0301",
    "ﬀ ﬃ ＡＢＣ！ ｆｕｌｌｗｉｄｔｈ？",
    "1,234.56 3/4 1e-3 0x1F 007 ½ ² ³ ① Ⅻ",
    "What is [MASK] on the table? [SEP] second [CLS] [UNK] [PAD]",
    "a[SEP]b [[SEP]] [mask] [Mask]",
    "e-mail me @ home #1 50% off ~ ^ | \\ ` < > { } [ ]",
    "x" * 101 + " after a word longer than 100 characters?",
    "y" * 100 + " a word of exactly 100 characters?",
    " ".join(["word"] * 60) + "?",
    "What is this? " * 30,
    "这是什么" * 40,
    "Hangul jamo \u1100\u1161\u11a8 and syllables 각 한?",
]

_FAKER_LOCALES = {
    "en_US": "?",
    "fr_FR": " ?",
    "de_DE": "?",
    "it_IT": "?",
    "pl_PL": "?",
    "cs_CZ": "?",
    "vi_VN": "?",
    "ru_RU": "?",
    "uk_UA": "?",
    "el_GR": ";",
    "ar_AA": "؟",
    "he_IL": "?",
    "fa_IR": "؟",
    "bn_BD": "?",
    "hy_AM": "?",
    "ja_JP": "？",
    "zh_CN": "？",
    "zh_TW": "？",
    "th_TH": "?",
}


def _generated(count_per_locale: int, seed: int) -> list[str]:
    """Faker's sentences (real words of each language, in a random order) asked as questions."""
    try:
        import faker
    except ImportError:
        return []
    texts = []
    for locale, mark in _FAKER_LOCALES.items():
        fake = faker.Faker(locale)
        fake.seed_instance(seed)
        for _ in range(count_per_locale):
            texts.append(fake.sentence(nb_words=8).rstrip(".。।") + mark)
    return texts


def _easy_vqa() -> list[str]:
    try:
        from easy_vqa import get_test_questions, get_train_questions
    except ImportError:
        return []
    return sorted(set(get_train_questions()[0]) | set(get_test_questions()[0]))


def question_corpus(seed: int = 0) -> list[str]:
    """At least 2,000 texts (about 2,400 with Faker and easy-vqa installed): each written
    question as written, upper-cased, with an emoji, with extra white space and repeated past
    any text length; the edge cases; easy-VQA's questions; generated questions."""
    written = [question for questions in QUESTIONS.values() for question in questions]
    texts = list(written)
    texts += [question.upper() for question in written]
    texts += [question.rstrip("?？;؟") + " 📷?" for question in written]
    texts += ["  " + question.replace(" ", "\t ", 2) + "\n" for question in written]
    texts += [(question + " ") * 12 for question in written]
    texts += EDGE_CASES + _easy_vqa() + _generated(100, seed)
    rng = random.Random(seed)
    while len(texts) < 2000:  # without the optional packages: written questions recombined
        texts.append(" ".join(rng.sample(written, 2)))
    return texts
