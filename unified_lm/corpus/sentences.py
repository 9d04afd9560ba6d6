"""English sentences for the synthetic corpus: a built-in generator or a user's text file.

The generator is a small phrase-structure grammar over hand-written word lists (people,
animals, objects, food, places, verbs with all their tense forms, adjectives, adverbs,
spelled-out numbers, years, clock times and dates). It exists so that the synthetic
corpus has a real vocabulary (thousands of distinct words, every tense, agreement,
questions, subordinate clauses) instead of a handful of repeated carrier phrases, which
would let an ASR model memorise the text side. Every sentence is 4 to 20 words long,
ends in a full stop or question mark, and holds no digits (numbers are spelled out, the
way a speaker says them). Generation is deterministic for a seed: it draws only from its
own ``random.Random(seed)``.

Multi-word lexicon entries are written with underscores (``living_room``) and become
spaces in the sentence.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, DataError

MIN_WORDS = 4
MAX_WORDS = 20


# --------------------------------------------------------------------------- lexicon


@dataclass(frozen=True)
class Noun:
    singular: str
    plural: str


@dataclass(frozen=True)
class Verb:
    base: str
    third: str  # she walks
    past: str  # she walked
    participle: str  # she has walked
    ing: str  # she is walking


def _regular_plural(word: str) -> str:
    if word.endswith(("s", "sh", "ch", "x", "z")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _regular_past(base: str) -> str:
    if base.endswith("e"):
        return base + "d"
    if base.endswith("y") and base[-2] not in "aeiou":
        return base[:-1] + "ied"
    return base + "ed"


def _regular_ing(base: str) -> str:
    if base.endswith("ie"):
        return base[:-2] + "ying"
    if base.endswith("e") and not base.endswith(("ee", "ye", "oe")):
        return base[:-1] + "ing"
    return base + "ing"


def _third_person(base: str) -> str:
    if base == "have":
        return "has"
    if base.endswith("o"):
        return base + "es"
    return _regular_plural(base)


def _words(spec: str) -> tuple[str, ...]:
    return tuple(w.replace("_", " ") for w in spec.split())


def _nouns(spec: str) -> tuple[Noun, ...]:
    """``box`` is regular; ``child/children`` gives the plural explicitly."""
    out = []
    for entry in spec.split():
        singular, _, plural = entry.partition("/")
        singular = singular.replace("_", " ")
        out.append(Noun(singular, plural.replace("_", " ") if plural else _regular_plural(singular)))
    return tuple(out)


def _verbs(spec: str) -> tuple[Verb, ...]:
    """``walk`` is regular; ``take/took/taken`` and ``stop/stopped/stopped/stopping``
    give the irregular or consonant-doubling forms (past, participle, -ing) explicitly."""
    out = []
    for entry in spec.split():
        base, *forms = entry.split("/")
        past = forms[0] if forms else _regular_past(base)
        participle = forms[1] if len(forms) > 1 else past
        ing = forms[2] if len(forms) > 2 else _regular_ing(base)
        out.append(Verb(base, _third_person(base), past, participle, ing))
    return tuple(out)


NAMES = _words("""
    Alice Benjamin Charlotte Daniel Emma Frank Grace Henry Isabel Jack Katherine Liam
    Margaret Nathan Olivia Peter Rachel Samuel Teresa Victor Wendy Xavier Yvonne Zachary
    Amelia Arthur Beatrice Caleb Diana Edward Fiona George Hannah Isaac Julia Kevin Laura
    Martin Nora Oscar Paula Robert Sophie Thomas Ursula Vincent William Adam Bella Carl
    Dorothy Elliot Felix Gloria Harold Irene James Karen Leonard Monica Neil Owen Patricia
    Quincy Ruth Simon Tina Walter Abigail Albert Brenda Colin Deborah Eric Emily Gordon Helen
    Ian Jessica Keith Lucy Michael Natalie Philip Rebecca Stephen Victoria Anna Andrew Clara
    David Eleanor Frederick Gabriel Harriet Joseph Lily Matthew Nicholas Oliver Rose Sarah
    Timothy Agnes Bernard Cecilia Dennis Edith Gerald Hugo Joan Louise Marcus Norman Phoebe
    Ralph Stella Theodore Vera Wallace Molly Ethan Maya Leo Ivy Jonah Ruby Miles Hazel
""")

PEOPLE = _nouns("""
    teacher farmer doctor nurse baker driver pilot student artist writer singer dancer
    painter soldier sailor fisherman/fishermen gardener carpenter plumber builder lawyer
    judge banker clerk waiter waitress chef cook butcher tailor mechanic engineer scientist
    professor librarian musician poet actor actress child/children boy girl man/men
    woman/women baby friend cousin uncle aunt grandmother grandfather brother sister mother
    father son daughter husband wife/wives stranger visitor tourist guest customer manager
    officer detective reporter photographer journalist shopkeeper postman/postmen
    firefighter volunteer nephew niece teenager shepherd hunter traveler king queen prince
    princess captain coach player runner swimmer climber inventor architect dentist surgeon
    pharmacist cashier janitor guard mayor senator editor designer programmer secretary
    accountant neighbor landlord tenant passenger sheriff priest monk nun servant
""")

ANIMALS = _nouns("""
    dog cat horse cow sheep/sheep goat pig chicken duck goose/geese rabbit mouse/mice fox
    wolf/wolves bear deer/deer lion tiger elephant monkey giraffe zebra camel donkey owl
    eagle parrot swan frog turtle snake lizard squirrel bee butterfly spider whale dolphin
    shark pony kitten puppy lamb calf/calves hen rooster crow pigeon sparrow bat beaver
    otter badger hedgehog moose/moose kangaroo penguin seal crab ant beetle hamster raccoon
""")

OBJECTS = _nouns("""
    book letter basket box bag umbrella bottle cup plate bowl spoon fork knife/knives key
    lamp candle chair table blanket pillow map ticket camera phone radio clock watch ring
    necklace bracelet hat coat jacket scarf/scarves glove boot shoe sock shirt dress sweater
    belt wallet purse suitcase backpack notebook pencil pen envelope newspaper magazine
    photograph painting mirror brush comb towel bucket ladder hammer shovel rope kettle pan
    pot jar vase guitar violin piano drum trumpet bicycle kite ball doll puzzle toy window
    door fence gate bench shelf/shelves drawer cupboard carpet curtain bed sofa desk computer
    keyboard screen printer battery lantern tent compass telescope microscope needle thread
    button ribbon flag sign poster calendar diary dictionary recipe parcel package present
    gift card coin stamp medal trophy helmet mask sword shield saddle wheel engine boat
    canoe car truck tractor wagon cart sled statue bell whistle rake broom mop sponge
    bandage quilt rug tray teapot mug glass jug saucer barrel crate chest trunk cabinet
    sculpture crown feather shell stone pebble brick log branch leaf/leaves flower seed
    fountain_pen sewing_machine paintbrush globe hammock anchor
""")

FOODS = _nouns("""
    apple banana orange pear peach plum grape cherry lemon melon strawberry potato/potatoes
    tomato/tomatoes carrot onion cabbage cucumber pumpkin mushroom pie cake cookie sandwich
    biscuit muffin pancake omelet sausage burger pizza salad pastry doughnut waffle pretzel
    apricot coconut pineapple avocado lime peanut walnut almond radish turnip beetroot
    dumpling cupcake croissant bagel tart pickle egg
""")

MASS_FOODS = _words("""
    bread rice cheese soup butter honey milk coffee tea juice chocolate pasta porridge
    yogurt jam lemonade cereal popcorn toast spinach lettuce garlic ginger cinnamon
    broccoli cream custard syrup oatmeal
""")

CONTAINERS = _words("a_bowl_of a_cup_of a_glass_of a_slice_of a_jar_of a_plate_of a_piece_of a_box_of")

PLACES = _words("""
    market library station airport museum park garden kitchen bakery hospital school
    church castle bridge river lake forest beach harbor farm village office factory
    theater cinema restaurant cafe hotel stadium gym pool zoo shop bank post_office garage
    attic basement cellar hallway bedroom bathroom living_room balcony porch barn stable
    meadow valley mountain hill island desert cave tower lighthouse cottage palace temple
    square corner playground classroom laboratory studio workshop warehouse courtyard
    orchard vineyard pier dock canal tunnel embassy prison courthouse town_hall gallery
    bookstore pharmacy supermarket campsite pond field cliff shore jungle fire_station
    bus_stop train_station police_station swimming_pool car_park
""")

CITIES = _words("""
    London Paris Berlin Madrid Rome Vienna Prague Dublin Lisbon Athens Oslo Stockholm
    Helsinki Warsaw Budapest Amsterdam Brussels Geneva Zurich Venice Florence Naples
    Barcelona Seville Edinburgh Glasgow Manchester Liverpool Boston Chicago Denver Seattle
    Portland Houston Dallas Phoenix Atlanta Miami Toronto Montreal Vancouver Sydney
    Melbourne Auckland Tokyo Kyoto Seoul Beijing Shanghai Delhi Mumbai Cairo Nairobi Lagos
    Lima Santiago Havana Istanbul Moscow Dubai Singapore Bangkok Mexico_City
""")

COUNTRIES = _words("""
    France Spain Italy Germany Norway Sweden Japan China India Brazil Canada Mexico Egypt
    Kenya Peru Chile Greece Turkey Ireland Scotland Portugal Poland Austria Iceland
    Australia Argentina Morocco Vietnam Thailand Denmark Finland Switzerland
""")

EVENTS = _words("""
    meeting concert lecture game match show party wedding ceremony festival exhibition
    class lesson race parade auction interview rehearsal tournament performance conference
    dinner lunch breakfast picnic tour flight ferry seminar workshop_session
""")

TOPICS = _words("""
    weather election history economy future past harvest holiday journey accident storm
    problem plan idea story news budget project exam movie song rules price schedule
    contract results report argument mystery experiment invention discovery treaty war
    peace ocean climate universe planet neighborhood traffic elections museum_visit
    vacation wedding_plans tax_reform city_council library_budget
""")

OBJECT_ADJECTIVES = _words("""
    big small large tiny heavy light old new ancient modern broken shiny dusty dirty clean
    wet dry warm cold soft hard smooth rough round square flat thin thick long short wide
    narrow empty full bright dark pale plain fancy cheap expensive precious valuable useful
    strange rare famous beautiful ugly pretty lovely simple wooden metal plastic leather
    woolen silk cotton golden rusty sticky fragile sturdy delicate colorful striped spotted
    folded torn wrinkled polished painted carved handmade borrowed stolen forgotten missing
    favorite spare enormous huge little secret mysterious antique elegant
""")

COLORS = _words("""
    red blue green yellow purple pink brown black white gray silver crimson scarlet violet
    turquoise beige ivory navy maroon olive amber emerald bronze copper lavender teal
""")

FOOD_ADJECTIVES = _words("""
    fresh ripe sweet sour bitter salty spicy delicious tasty juicy crunchy frozen cooked raw
    baked roasted boiled fried sliced homemade warm cold stale soft crisp creamy
""")

ANIMAL_ADJECTIVES = _words("""
    big small tiny old young fat thin hungry sleepy wild tame friendly lazy noisy shy brave
    clever gentle fierce playful lost injured spotted striped fluffy muddy wet curious
    nervous proud
""")

PERSON_ADJECTIVES = _words("""
    young old tall short kind friendly clever brave shy quiet loud busy tired happy cheerful
    angry nervous calm patient polite rude honest curious careful careless lazy proud
    generous gentle funny serious wise famous lonely excited worried sleepy hungry thirsty
    elderly grumpy anxious confident talented clumsy stubborn modest cautious energetic
    thoughtful helpful jealous sensible sincere strict retired local foreign cheeky
""")

PLACE_ADJECTIVES = _words("""
    old new busy quiet crowded empty small large ancient famous local abandoned narrow noisy
    peaceful beautiful dusty sunny shady cozy central nearby distant lonely muddy frozen
""")

SKIES = _words("sunny cloudy windy rainy foggy snowy stormy bright gray misty breezy wet overcast")

TEMPERATURES = _words("cold warm hot humid freezing mild chilly damp dry icy")

MANNER_ADVERBS = _words("""
    quickly slowly quietly loudly carefully gently happily sadly suddenly eagerly patiently
    nervously calmly proudly politely angrily bravely softly silently cheerfully easily
    gladly kindly warmly anxiously boldly briskly casually clumsily curiously deliberately
    fiercely foolishly gracefully hastily hungrily lazily merrily neatly openly rapidly
    recklessly secretly seriously sharply shyly smoothly steadily swiftly tenderly
    thoughtfully tightly wearily wildly willingly wisely badly well
""")

FREQUENCY_ADVERBS = _words("usually often sometimes rarely always never seldom occasionally normally")

WEEKDAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")

MONTHS = _words("January February March April May June July August September October November December")

SEASONS = _words("spring summer autumn winter")

OBJECT_VERBS = _verbs("""
    carry find/found/found buy/bought/bought sell/sold/sold paint clean open close fix repair
    borrow lend/lent/lent break/broke/broken drop/dropped/dropped/dropping lift move push
    pull hold/held/held hide/hid/hidden keep/kept/kept lose/lost/lost bring/brought/brought
    take/took/taken wrap/wrapped/wrapped/wrapping pack unpack fold wash dry polish
    build/built/built make/made/made draw/drew/drawn describe examine inspect measure weigh
    collect deliver order return replace steal/stole/stolen throw/threw/thrown
    catch/caught/caught grab/grabbed/grabbed/grabbing drag/dragged/dragged/dragging
    shake/shook/shaken choose/chose/chosen forget/forgot/forgotten/forgetting notice
    discover admire photograph decorate design fill empty cover check test use mend
    sew/sewed/sewn sign share trade rent study write/wrote/written send/sent/sent
    receive print copy sketch carve hang/hung/hung place arrange sort label guard protect
    lock unlock load unload bury dig/dug/dug/digging sweep/swept/swept
    scrub/scrubbed/scrubbed/scrubbing spill tear/tore/torn bend/bent/bent twist stretch
    squeeze search repaint wipe
""")

# Stative verbs sound wrong in the progressive ("she is wanting a lamp"), so they stay out of it.
STATIVE_VERBS = _verbs("""
    want need like love hate prefer/preferred/preferred/preferring remember own
""")

PERSON_VERBS = _verbs("""
    meet/met/met call visit thank help invite greet follow warn teach/taught/taught remind
    ask answer join trust hug/hugged/hugged/hugging interview hire pay/paid/paid congratulate recognize
    forgive/forgave/forgiven surprise amuse annoy encourage comfort drive/drove/driven
    accompany introduce miss ignore rescue wake/woke/woken blame praise support persuade
    convince interrupt applaud hear/heard/heard understand/understood/understood
    phone tease disturb admire
""")

ANIMAL_VERBS = _verbs("""
    feed/fed/fed chase watch pet/petted/petted/petting brush groom train ride/rode/ridden
    frighten spot/spotted/spotted/spotting photograph follow catch/caught/caught rescue wash
""")

FOOD_VERBS = _verbs("""
    eat/ate/eaten cook bake taste slice peel chop/chopped/chopped/chopping serve finish
    prepare fry boil roast grill mix stir/stirred/stirred/stirring toast pick
    grow/grew/grown enjoy devour munch swallow bite/bit/bitten/biting heat
""")

INTRANSITIVE_VERBS = _verbs("""
    arrive laugh smile wait sleep/slept/slept rest sing/sang/sung dance cry shout whisper
    jump sit/sat/sat/sitting stand/stood/stood wander hurry hesitate complain agree
    disappear appear escape relax pause pray climb fall/fell/fallen stumble shiver sneeze
    yawn cough listen nod/nodded/nodded/nodding wave blush frown giggle sigh scream whistle
    kneel/knelt/knelt rise/rose/risen play work read/read/read paint sulk doze
    chat/chatted/chatted/chatting
""")

MOTION_VERBS = _verbs("""
    walk drive/drove/driven ride/rode/ridden run/ran/run/running travel/traveled/traveled
    fly/flew/flown sail cycle rush march stroll jog/jogged/jogged/jogging hike
    go/went/gone come/came/come race swim/swam/swum/swimming limp
""")

SPEECH_VERBS = _verbs("""
    say/said/said explain mention promise announce admit/admitted/admitted/admitting claim insist report
    think/thought/thought know/knew/known hope realize learn hear/heard/heard read/read/read
    believe suspect guess
""")

TELL_VERBS = _verbs("tell/told/told warn remind promise assure inform convince")

TRADE_VERBS = _verbs("buy/bought/bought sell/sold/sold order borrow rent")

VISIT_VERBS = _verbs("meet/met/met visit call phone greet interview join")

CIVIC_VERBS = _verbs("build/built/built open close repair paint rebuild/rebuilt/rebuilt")

BUILDINGS = _nouns("bridge tower school library museum hospital station theater church factory")

PLACE_PREPOSITIONS = _words("near behind outside beside at next_to across_from not_far_from in_front_of")

POSSESSIVES = _words("my our your his her their")

CONJUNCTIONS = _words("because but while although so and_then after before when since until")

TIME_PAST = _words("yesterday last_week last_night this_morning last_month last_year earlier_today")

TIME_FUTURE = _words("tomorrow next_week tonight next_month next_year later_today soon")

# ----------------------------------------------------------------------- numbers

_ONES = _words("""
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen
    fifteen sixteen seventeen eighteen nineteen
""")
_TENS = _words("zero ten twenty thirty forty fifty sixty seventy eighty ninety")
_ORDINAL_ONES = _words("""
    zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh
    twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth
""")
_ORDINAL_TENS = _words("zeroth tenth twentieth thirtieth")


def spell_number(n: int) -> str:
    """0 <= n < 1,000,000 as spoken words: 342 -> 'three hundred and forty two'."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"cannot spell {n}: only 0 to 999,999")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" and {spell_number(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    head = f"{spell_number(thousands)} thousand"
    if not rest:
        return head
    return head + (" and " if rest < 100 else " ") + spell_number(rest)


def spell_ordinal(n: int) -> str:
    """1 <= n <= 31 (days of the month): 21 -> 'twenty first'."""
    if n < 20:
        return _ORDINAL_ONES[n]
    tens, ones = divmod(n, 10)
    return f"{_TENS[tens]} {_ORDINAL_ONES[ones]}" if ones else _ORDINAL_TENS[tens]


def spell_year(year: int) -> str:
    """Years as spoken: 1984 -> 'nineteen eighty four', 1905 -> 'nineteen oh five',
    2007 -> 'two thousand and seven', 2021 -> 'twenty twenty one'."""
    if 2000 <= year < 2010:
        return spell_number(year)
    century, rest = divmod(year, 100)
    if rest == 0:
        return f"{spell_number(century)} hundred"
    return f"{spell_number(century)} " + (f"oh {_ONES[rest]}" if rest < 10 else spell_number(rest))


def spell_clock(hour: int, minute: int) -> str:
    """A clock time the way people say it: 'half past six', 'a quarter to nine', 'ten fifteen'."""
    if minute == 0:
        return {12: "noon", 0: "midnight"}.get(hour, f"{spell_number(hour)} o'clock")
    h = hour % 12 or 12
    if minute == 30:
        return f"half past {spell_number(h)}"
    if minute == 15:
        return f"a quarter past {spell_number(h)}"
    if minute == 45:
        return f"a quarter to {spell_number(h % 12 + 1)}"
    return f"{spell_number(h)} {'oh ' if minute < 10 else ''}{spell_number(minute)}"


# ----------------------------------------------------------------------- grammar


def _article(word: str) -> str:
    w = word.lower()
    if w.startswith(("hour", "honest", "honor", "heir")):
        return "an"
    if w.startswith(("uni", "use", "usu", "eu", "one")):
        return "a"
    return "an" if w[0] in "aeiou" else "a"


@dataclass(frozen=True)
class _Subject:
    words: str
    person: str  # "1sg" (I), "3sg", or "pl"

    def be(self, past: bool) -> str:
        if past:
            return "were" if self.person == "pl" else "was"
        return {"1sg": "am", "3sg": "is", "pl": "are"}[self.person]

    def present(self, verb: Verb) -> str:
        return verb.third if self.person == "3sg" else verb.base

    def have(self) -> str:
        return "has" if self.person == "3sg" else "have"


class _Grammar:
    """Phrase builders over one random stream; each template returns a sentence string."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def pick(self, items):
        return self.rng.choice(items)

    def maybe(self, p: float, text: str) -> str:
        return text if self.rng.random() < p else ""

    # -- phrases

    def count(self) -> int:
        r = self.rng.random()
        if r < 0.7:
            return self.rng.randint(2, 12)
        if r < 0.9:
            return self.rng.randint(13, 99)
        return self.rng.randint(100, 999)

    def noun_phrase(self, nouns, adjectives, adj_p: float = 0.5) -> str:
        noun = self.pick(nouns)
        adj = self.maybe(adj_p, self.pick(adjectives))
        r = self.rng.random()
        if r < 0.3:
            head = f"{adj} {noun.singular}".strip()
            return f"{_article(head)} {head}"
        if r < 0.55:
            return f"the {adj} {noun.singular}"
        if r < 0.7:
            return f"{self.pick(POSSESSIVES)} {adj} {noun.singular}"
        if r < 0.8:
            return f"{self.pick(('this', 'that'))} {adj} {noun.singular}"
        if r < 0.9:
            return f"{spell_number(self.count())} {adj} {noun.plural}"
        return f"{self.pick(('some', 'several', 'a few', 'many', 'these', 'those'))} {adj} {noun.plural}"

    def thing(self) -> str:
        adjectives = OBJECT_ADJECTIVES if self.rng.random() < 0.75 else COLORS
        return self.noun_phrase(OBJECTS, adjectives)

    def food(self) -> str:
        if self.rng.random() < 0.35:
            return f"{self.pick(CONTAINERS)} {self.maybe(0.4, self.pick(FOOD_ADJECTIVES))} {self.pick(MASS_FOODS)}"
        return self.noun_phrase(FOODS, FOOD_ADJECTIVES)

    def animal(self) -> str:
        return self.noun_phrase(ANIMALS, ANIMAL_ADJECTIVES + COLORS, adj_p=0.4)

    def person(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return self.pick(NAMES)
        adj = self.maybe(0.4, self.pick(PERSON_ADJECTIVES))
        noun = self.pick(PEOPLE).singular
        if r < 0.7:
            return f"the {adj} {noun}"
        if r < 0.9:
            return f"{self.pick(POSSESSIVES)} {adj} {noun}"
        head = f"{adj} {noun}".strip()
        return f"{_article(head)} {head}"

    def subject(self) -> _Subject:
        r = self.rng.random()
        if r < 0.3:
            return _Subject(self.pick(NAMES), "3sg")
        if r < 0.7:
            return _Subject(self.person(), "3sg") if self.rng.random() < 0.6 else self._people_subject()
        if r < 0.8:
            a, b = self.rng.sample(NAMES, 2)
            return _Subject(f"{a} and {b}", "pl")
        if r < 0.9:
            return self._people_subject()
        return self.pick((_Subject("I", "1sg"), _Subject("we", "pl"), _Subject("they", "pl"),
                          _Subject("she", "3sg"), _Subject("he", "3sg")))

    def _people_subject(self) -> _Subject:
        adj = self.maybe(0.4, self.pick(PERSON_ADJECTIVES))
        noun = self.pick(PEOPLE)
        if self.rng.random() < 0.5:
            return _Subject(f"the {adj} {noun.singular}", "3sg")
        det = self.pick(("the", "our", "their", "some", "two", "three", "several", "many"))
        return _Subject(f"{det} {adj} {noun.plural}", "pl")

    def place(self) -> str:
        adj = self.maybe(0.3, self.pick(PLACE_ADJECTIVES))
        return f"the {adj} {self.pick(PLACES)}"

    def place_pp(self) -> str:
        return f"{self.pick(PLACE_PREPOSITIONS)} {self.place()}"

    def destination(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return f"to {self.place()}"
        return f"to {self.pick(CITIES if r < 0.85 else COUNTRIES)}"

    def past_time(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return self.pick(TIME_PAST)
        if r < 0.6:
            return f"on {self.pick(WEEKDAYS)}"
        if r < 0.7:
            return f"last {self.pick(WEEKDAYS + SEASONS)}"
        if r < 0.85:
            return f"in {self.pick(MONTHS)}"
        return f"{spell_number(self.rng.randint(2, 30))} {self.pick(('minutes', 'hours', 'days', 'weeks', 'years'))} ago"

    def future_time(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return self.pick(TIME_FUTURE)
        if r < 0.75:
            return f"on {self.pick(WEEKDAYS)}"
        return f"next {self.pick(WEEKDAYS + SEASONS)}"

    def clock(self) -> str:
        return spell_clock(self.rng.randint(0, 23), self.pick((0, 0, 15, 30, 45, 5, 10, 20, 25, 40, 50)))

    def date(self) -> str:
        month, day = self.pick(MONTHS), spell_ordinal(self.rng.randint(1, 28))
        return f"the {day} of {month}" if self.rng.random() < 0.5 else f"{month} {day}"

    def object_clause(self, subj: _Subject, tense: str, adverb: str = "") -> str:
        """Subject, verb and object in the given tense, the verb agreeing with ``subj``;
        ``adverb`` (often, never...) goes where English puts it, before the main verb."""
        kind = self.rng.random()
        if kind < 0.45:
            verbs = OBJECT_VERBS if tense == "progressive" else OBJECT_VERBS + STATIVE_VERBS
            verb, obj = self.pick(verbs), self.thing()
        elif kind < 0.65:
            verb, obj = self.pick(PERSON_VERBS), self.person()
        elif kind < 0.85:
            verb, obj = self.pick(FOOD_VERBS), self.food()
        else:
            verb, obj = self.pick(ANIMAL_VERBS), self.animal()
        if tense == "past":
            vp = f"{adverb} {verb.past}"
        elif tense == "present":
            vp = f"{adverb} {subj.present(verb)}"
        elif tense == "future":
            vp = f"will {adverb} {verb.base}"
        elif tense == "progressive":
            vp = f"{subj.be(past=self.rng.random() < 0.5)} {adverb} {verb.ing}"
        elif tense == "perfect":
            vp = f"{subj.have()} {adverb} {verb.participle}"
        else:
            raise ValueError(f"unknown tense {tense!r}")
        return f"{subj.words} {vp} {obj}"

    def short_clause(self) -> str:
        subj = self.subject()
        if self.rng.random() < 0.5:
            return self.object_clause(subj, "past")
        return f"{subj.words} {self.pick(INTRANSITIVE_VERBS).past} {self.maybe(0.5, self.pick(MANNER_ADVERBS))}"

    # -- sentence templates

    def t_past_action(self) -> str:
        clause = self.object_clause(self.subject(), "past")
        return f"{clause} {self.maybe(0.5, self.place_pp())} {self.maybe(0.5, self.past_time())}."

    def t_intransitive(self) -> str:
        subj = self.subject() if self.rng.random() < 0.7 else _Subject(self.animal_subject(), "3sg")
        verb = self.pick(INTRANSITIVE_VERBS)
        adv = self.maybe(0.5, self.pick(MANNER_ADVERBS))
        return f"{subj.words} {verb.past} {adv} {self.maybe(0.6, self.place_pp())} {self.maybe(0.4, self.past_time())}."

    def animal_subject(self) -> str:
        head = f"{self.maybe(0.4, self.pick(ANIMAL_ADJECTIVES + COLORS))} {self.pick(ANIMALS).singular}".strip()
        det = self.pick(("the", "our", "my", "their", _article(head)))
        return f"{det} {head}"

    def t_habit(self) -> str:
        subj = self.subject()
        if self.rng.random() < 0.5:
            freq = self.pick(("every morning", "every evening", "on weekends", "in the summer",
                              f"every {self.pick(WEEKDAYS)}", "twice a week", "once a month"))
            return f"{freq}, {self.object_clause(subj, 'present')}."
        clause = self.object_clause(subj, "present", adverb=self.pick(FREQUENCY_ADVERBS))
        return f"{clause} {self.maybe(0.4, self.place_pp())}."

    def t_future(self) -> str:
        clause = self.object_clause(self.subject(), "future")
        if self.rng.random() < 0.5:
            return f"{self.future_time()}, {clause}."
        return f"{clause} {self.maybe(0.5, self.place_pp())} {self.future_time()}."

    def t_progressive(self) -> str:
        return f"{self.object_clause(self.subject(), 'progressive')} {self.maybe(0.6, self.place_pp())}."

    def t_perfect(self) -> str:
        adverb = self.maybe(0.4, self.pick(("already", "never", "just", "recently", "finally")))
        clause = self.object_clause(self.subject(), "perfect", adverb=adverb)
        return f"{clause} {self.maybe(0.3, self.pick(('this week', 'this year', 'today', 'this morning')))}."

    def t_question(self) -> str:
        subj = self.subject()
        # Questions invert the auxiliary, so the clause is built from base forms.
        kind = self.rng.random()
        verb, obj = (self.pick(OBJECT_VERBS), self.thing()) if kind < 0.5 else (self.pick(PERSON_VERBS), self.person())
        wh = self.maybe(0.5, self.pick(("why", "when", "where", "how")))
        aux = self.pick(("did", "will", "could", "should", "can"))
        tail = self.maybe(0.5, self.past_time() if aux == "did" else self.future_time())
        return f"{wh} {aux} {subj.words} {verb.base} {obj} {tail}?"

    def kind_of_noun(self) -> tuple[tuple[Noun, ...], tuple[str, ...]]:
        """A noun list with the adjectives that suit it (no 'wooden apples', 'spare fathers')."""
        return self.pick(((OBJECTS, OBJECT_ADJECTIVES + COLORS), (ANIMALS, ANIMAL_ADJECTIVES + COLORS),
                          (FOODS, FOOD_ADJECTIVES), (PEOPLE, PERSON_ADJECTIVES)))

    def t_be_question(self) -> str:
        nouns, adjectives = self.kind_of_noun()
        return f"{self.pick(('is', 'was'))} the {self.pick(nouns).singular} {self.place_pp()} {self.pick(adjectives)}?"

    def t_purchase(self) -> str:
        subj = self.subject()
        n = self.count()
        nouns, adjectives = self.pick(((OBJECTS, OBJECT_ADJECTIVES + COLORS), (FOODS, FOOD_ADJECTIVES)))
        what = f"{spell_number(n)} {self.maybe(0.4, self.pick(adjectives))} {self.pick(nouns).plural}"
        price = self.rng.randint(1, 999)
        currency = self.pick(("dollar", "pound", "euro"))
        cost = f"{spell_number(price)} {currency}{'s' if price != 1 else ''}"
        verb = self.pick(TRADE_VERBS)
        return f"{subj.words} {verb.past} {what} for {cost} {self.maybe(0.4, self.past_time())}."

    def t_there_is(self) -> str:
        nouns, adjectives = self.kind_of_noun()
        noun = self.pick(nouns)
        adj = self.maybe(0.5, self.pick(adjectives))
        past = self.rng.random() < 0.5
        if self.rng.random() < 0.5:
            what = f"{spell_number(self.count())} {adj} {noun.plural}"
            be = "were" if past else "are"
        else:
            head = f"{adj} {noun.singular}".strip()
            what, be = f"{_article(head)} {head}", "was" if past else "is"
        return f"there {be} {what} {self.place_pp()}."

    def t_description(self) -> str:
        if self.rng.random() < 0.5:
            subj = _Subject(self.pick(NAMES), "3sg") if self.rng.random() < 0.5 else self.subject()
            adjs = self.rng.sample(PERSON_ADJECTIVES, 2)
            verb = self.pick(("seemed", "looked", "felt", "was", "became"))
            if subj.person == "pl" and verb == "was":
                verb = "were"
            very = self.maybe(0.3, "very")
            return f"{subj.words} {verb} {very} {adjs[0]} and {adjs[1]} {self.maybe(0.5, self.past_time())}."
        adjs = self.rng.sample(PLACE_ADJECTIVES, 2)
        where = f"{self.pick(('in', 'near'))} {self.pick(CITIES)}"
        return f"the {self.pick(PLACES)} {where} {self.pick(('is', 'was'))} {adjs[0]} and {adjs[1]}."

    def t_compound(self) -> str:
        return f"{self.short_clause()} {self.pick(CONJUNCTIONS)} {self.short_clause()}."

    def t_meeting(self) -> str:
        a, b = self.person(), self.person()
        verb = self.pick(VISIT_VERBS)
        when = self.pick((f"on {self.pick(WEEKDAYS)}", f"at {self.clock()}", f"on {self.date()}"))
        return f"{a} {verb.past} {b} {self.maybe(0.5, self.place_pp())} {when}."

    def t_schedule(self) -> str:
        event = self.pick(EVENTS)
        verb = self.pick(("starts", "begins", "ends", "will start", "will begin", "finished", "began", "started"))
        where = self.maybe(0.4, f"in {self.pick(CITIES)}")
        day = self.pick(WEEKDAYS) if self.rng.random() < 0.5 else self.date()
        return f"the {event} {where} {verb} at {self.clock()} {self.maybe(0.5, 'on ' + day)}."

    def t_imperative(self) -> str:
        verb = self.pick(OBJECT_VERBS)
        lead = self.pick(("please", "please", "do not forget to", "remember to", "try to", "never"))
        tail = self.pick((self.place_pp(), f"before {self.clock()}", self.future_time(), ""))
        return f"{lead} {verb.base} {self.thing()} {self.maybe(0.3, self.pick(MANNER_ADVERBS))} {tail}."

    def t_history(self) -> str:
        year = spell_year(self.rng.randint(1900, 2029))
        if self.rng.random() < 0.5:
            return f"{self.pick(NAMES)} was born in {self.pick(CITIES)} in {year}."
        building = self.pick(BUILDINGS).singular
        det = self.pick(("a new", "the old", "the", _article(building)))
        town = self.pick(("the town", "the city", "the village", "the council", "the government"))
        where = f"{self.pick(('near', 'beside'))} {self.place()}"
        return f"in {year}, {town} {self.pick(CIVIC_VERBS).past} {det} {building} {where}."

    def t_speech(self) -> str:
        subj = self.subject()
        if self.rng.random() < 0.5:
            verb = self.pick(SPEECH_VERBS)
            return f"{subj.words} {verb.past} that {self.short_clause()}."
        return f"{subj.words} {self.pick(TELL_VERBS).past} {self.person()} that {self.short_clause()}."

    def t_travel(self) -> str:
        subj = self.subject()
        verb = self.pick(MOTION_VERBS)
        when = self.pick((self.past_time(), f"in {spell_year(self.rng.randint(1950, 2024))}", f"on {self.date()}", ""))
        company = self.maybe(0.3, f"with {self.person()}")
        how = self.maybe(0.3, self.pick(MANNER_ADVERBS))
        return f"{subj.words} {verb.past} {how} {self.destination()} {company} {when}."

    def t_weather(self) -> str:
        a, b = self.pick(SKIES), self.pick(TEMPERATURES)
        where = self.pick(CITIES)
        when = self.pick(
            (f"on {self.pick(WEEKDAYS)}", self.past_time(), f"in {self.pick(MONTHS)}", f"last {self.pick(SEASONS)}")
        )
        return f"it was {a} and {b} in {where} {when}."

    def t_talk(self) -> str:
        a, b = self.person(), self.person()
        hours = self.rng.randint(2, 12)
        verb = self.pick(("talked", "argued", "joked", "read", "wrote"))
        return f"{a} and {b} {verb} about the {self.pick(TOPICS)} for {spell_number(hours)} hours."

    def t_food(self) -> str:
        subj = self.subject()
        verb = self.pick(FOOD_VERBS)
        meal = self.maybe(0.5, f"for {self.pick(('breakfast', 'lunch', 'dinner', 'dessert', 'supper'))}")
        company = self.maybe(0.3, f"with {self.person()}")
        return f"{subj.words} {verb.past} {self.food()} {company} {meal}."

    TEMPLATES = (
        ("t_past_action", 4), ("t_intransitive", 3), ("t_habit", 2), ("t_future", 2),
        ("t_progressive", 2), ("t_perfect", 1), ("t_question", 2), ("t_be_question", 1),
        ("t_purchase", 1), ("t_there_is", 1), ("t_description", 1), ("t_compound", 2),
        ("t_meeting", 1), ("t_schedule", 1), ("t_imperative", 1), ("t_history", 1),
        ("t_speech", 2), ("t_travel", 2), ("t_weather", 1), ("t_talk", 1), ("t_food", 2),
    )

    def sentence(self) -> str:
        names, weights = zip(*self.TEMPLATES)
        raw = getattr(self, self.rng.choices(names, weights)[0])()
        # Optional phrases leave double spaces and spaces before punctuation behind.
        text = re.sub(r"\s+([,.?])", r"\1", " ".join(raw.split()))
        return text[0].upper() + text[1:]


# ----------------------------------------------------------------------- public API

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lower-cased words of a sentence, punctuation dropped (for counting vocabulary)."""
    return _WORD.findall(text.lower())


def generate_sentences(n: int, seed: int) -> list[str]:
    """``n`` distinct English sentences of 4 to 20 words, deterministic for ``seed``."""
    return text_corpus(n, seed)


def read_sentences(path: str | Path) -> list[str]:
    """One sentence a line from a UTF-8 text file; blank lines skipped, repeats dropped
    (a repeated sentence could otherwise land in both train and test)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "text file not found")
    out: list[str] = []
    seen: set[str] = set()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = " ".join(raw.decode("utf-8").split())
            except UnicodeDecodeError as e:
                raise DataError(path, f"not valid UTF-8 ({e.reason} at byte {e.start})", lineno) from None
            if text and text not in seen:
                seen.add(text)
                out.append(text)
    if not out:
        raise DataError(path, "no sentences (the file is empty or blank)")
    return out


def split_for_continuation(text: str) -> tuple[str, str] | None:
    """Splits a sentence at the word boundary nearest its middle into (prompt, continuation),
    each at least two words; None when the sentence is too short for that."""
    tokens = text.split()
    if len(tokens) < 4:
        return None
    middle = len(tokens) // 2
    return " ".join(tokens[:middle]), " ".join(tokens[middle:])


def text_corpus(n: int, seed: int, exclude: Sequence[str] = ()) -> list[str]:
    """``n`` distinct generated sentences none of which is in ``exclude`` (compared after
    folding case and white space): the text a text LM pre-trains on, kept apart from the
    dev and test transcripts it will later be scored on."""
    banned = {_fold(t) for t in exclude}
    grammar = _Grammar(random.Random(seed))
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 20 * n + 1000:
            raise ConfigError(f"the sentence grammar gave only {len(out)} usable sentences of the {n} asked for")
        text = grammar.sentence()
        if text in seen or _fold(text) in banned or not MIN_WORDS <= len(words(text)) <= MAX_WORDS:
            continue
        seen.add(text)
        out.append(text)
    return out


def write_text_corpus(path: str | Path, n: int, seed: int, exclude_manifests: Sequence[str | Path] = ()) -> int:
    """Writes ``text_corpus(n, seed)`` to ``path`` (one sentence a line, atomically), none of
    them a transcript of ``exclude_manifests``; returns how many transcripts were excluded."""
    from ..io import atomic_write_text
    from .manifest import read_audio_manifest

    excluded = [r.text for m in exclude_manifests for r in read_audio_manifest(m)]
    atomic_write_text(path, "".join(f"{s}\n" for s in text_corpus(n, seed, excluded)))
    return len(excluded)


def _fold(text: str) -> str:
    return " ".join(text.lower().split())
