"""Build img2text2img/openvocab/imagenet_words.tsv: each ImageNet-1k class -> the plain word(s) a caption would use.

Why rules and not a hand-typed list of 1,000 rows: the animal classes come in contiguous index ranges (all 118 dog
breeds -> dog), and most object classes are "modifier noun" names whose last word is the caption word ("sports car"
-> car); only the exceptions are written out below. Words: comma-separated alternatives, the first is the main one
(tag and constraint); any of them in a caption counts as naming the class. "-" marks a class no plain word names
reliably (carpenter's "plane" would become an airplane). Run: python scripts/make_imagenet_words.py [--labels FILE]
"""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "img2text2img" / "openvocab" / "imagenet_words.tsv"

# (first index, last index inclusive) -> words, for the animal part of the list (ImageNet's WordNet order)
RANGES = [
    ((0, 1), "fish"), ((2, 4), "shark,fish"), ((5, 6), "fish"), ((7, 7), "rooster,chicken,bird"),
    ((8, 8), "chicken,hen,bird"), ((9, 9), "ostrich,bird"), ((10, 21), "bird"), ((22, 22), "eagle,bird"),
    ((23, 23), "vulture,bird"), ((24, 24), "owl,bird"), ((25, 29), "lizard"), ((30, 32), "frog"),
    ((33, 37), "turtle"), ((38, 48), "lizard"), ((49, 50), "crocodile,alligator"), ((51, 51), "dinosaur"),
    ((52, 68), "snake"), ((69, 69), "-"), ((70, 77), "spider"), ((78, 79), "bug,insect"), ((80, 83), "bird"),
    ((84, 84), "peacock,bird"), ((85, 86), "bird"), ((87, 90), "parrot,bird"), ((91, 96), "bird"),
    ((97, 98), "duck,bird"), ((99, 99), "goose,bird"), ((100, 100), "swan,bird"), ((101, 101), "elephant"),
    ((102, 102), "-"), ((103, 103), "platypus"), ((104, 104), "kangaroo"), ((105, 105), "koala"),
    ((106, 106), "wombat"), ((107, 107), "jellyfish"), ((108, 111), "-"), ((112, 112), "shell"),
    ((113, 114), "snail"), ((115, 117), "-"), ((118, 121), "crab"), ((122, 124), "lobster"),
    ((125, 125), "crab"), ((126, 126), "-"), ((127, 143), "bird"), ((144, 144), "pelican,bird"),
    ((145, 145), "penguin,bird"), ((146, 146), "bird"), ((147, 148), "whale"), ((149, 149), "-"),
    ((150, 150), "seal"), ((151, 268), "dog"), ((269, 271), "wolf"), ((272, 272), "coyote"),
    ((273, 275), "dog"), ((276, 276), "hyena"), ((277, 280), "fox"), ((281, 285), "cat"),
    ((286, 286), "cougar,cat"), ((287, 287), "lynx,cat"), ((288, 289), "leopard"), ((290, 290), "jaguar"),
    ((291, 291), "lion"), ((292, 292), "tiger"), ((293, 293), "cheetah"), ((294, 297), "bear"),
    ((298, 299), "meerkat"), ((300, 307), "beetle,bug,insect"), ((308, 308), "fly,insect"),
    ((309, 309), "bee,insect"), ((310, 310), "ant,insect"), ((311, 312), "grasshopper,insect"),
    ((313, 318), "insect,bug"), ((319, 320), "dragonfly,insect"), ((321, 326), "butterfly"),
    ((327, 327), "starfish"), ((328, 329), "-"), ((330, 332), "rabbit,bunny"), ((333, 333), "hamster"),
    ((334, 334), "porcupine"), ((335, 335), "squirrel"), ((336, 336), "groundhog"), ((337, 337), "beaver"),
    ((338, 338), "guinea,pig"), ((339, 339), "horse,pony"), ((340, 340), "zebra"), ((341, 343), "pig,hog"),
    ((344, 344), "hippo,hippopotamus"), ((345, 345), "cow,ox,bull,cattle"), ((346, 346), "cow,buffalo,ox,cattle,bull"), ((347, 347), "buffalo,bison"),
    ((348, 349), "sheep,ram"), ((350, 350), "goat"), ((351, 353), "antelope,deer,gazelle"),
    ((354, 354), "camel"), ((355, 355), "llama"), ((356, 359), "weasel,ferret"), ((360, 360), "otter"),
    ((361, 361), "skunk"), ((362, 362), "badger"), ((363, 363), "armadillo"), ((364, 364), "sloth"),
    ((365, 365), "orangutan,ape,monkey"), ((366, 366), "gorilla,ape"), ((367, 367), "chimpanzee,chimp,monkey"),
    ((368, 384), "monkey"), ((385, 386), "elephant"), ((387, 387), "panda"), ((388, 388), "panda,bear"),
    ((389, 397), "fish"),
]

# object classes whose last word is not the caption word (or needs alternatives); keyed by the label text. Classes a
# person calls by one word share that main word, so their probabilities add up: the head spreads Flickr8k's cars over
# racer / sports car / jeep / cab / limousine / minivan, its cows over ox / oxcart / water buffalo, its horses over
# sorrel / horse cart (train photos whose captions name the word)
OBJECTS = {
    "abaya": "dress", "academic gown": "gown", "aircraft carrier": "ship,boat", "airliner": "airplane,plane,jet",
    "airship": "blimp", "altar": "church", "amphibian": "vehicle", "analog clock": "clock", "apiary": "-",
    "ashcan": "trash,garbage", "assault rifle": "gun,rifle", "bakery": "shop,store,bakery", "balance beam": "-",
    "ballpoint": "pen", "Band Aid": "bandage", "bannister": "railing,stairs", "barbell": "weights",
    "barber chair": "chair", "barbershop": "shop,barber", "barrow": "wheelbarrow", "bassinet": "crib,bed",
    "bath towel": "towel", "beach wagon": "car", "beacon": "lighthouse", "bearskin": "hat", "beer bottle": "bottle,beer",
    "beer glass": "glass,beer", "bell cote": "church", "bib": "-", "bicycle-built-for-two": "bicycle,bike",
    "binder": "-", "bolo tie": "tie", "bonnet": "hat", "bookcase": "books,shelf,bookshelf", "bookshop": "store,shop,books",
    "bottlecap": "cap", "bow": "-", "brass": "-", "brassiere": "bra", "breakwater": "pier", "breastplate": "armor",
    "bulletproof vest": "vest", "bullet train": "train", "butcher shop": "shop,store", "cab": "car,taxi,cab",
    "caldron": "pot", "can opener": "-", "cardigan": "sweater", "car mirror": "car", "carpenter's kit": "tools",
    "carton": "box", "car wheel": "car,wheel", "cash machine": "atm", "cassette player": "radio",
    "catamaran": "boat,sailboat", "CD player": "stereo", "cellular telephone": "phone,cellphone", "chain mail": "armor",
    "chain saw": "chainsaw,saw", "chest": "-", "chiffonier": "dresser", "chime": "bells", "china cabinet": "cabinet",
    "Christmas stocking": "stocking", "cinema": "theater,theatre", "cliff dwelling": "ruins", "cloak": "cloak,cape",
    "clog": "shoe,shoes", "cocktail shaker": "-", "coffee mug": "mug,cup", "coffeepot": "coffee,pot",
    "coil": "-", "combination lock": "lock", "computer keyboard": "keyboard,computer", "confectionery": "shop,store,candy",
    "container ship": "ship,boat", "convertible": "car", "cornet": "trumpet", "cowboy boot": "boots,boot",
    "cowboy hat": "hat", "cradle": "crib", "crane": "-", "crash helmet": "helmet", "Crock Pot": "pot", "cuirass": "armor",
    "desktop computer": "computer", "dial telephone": "phone,telephone", "digital clock": "clock",
    "digital watch": "watch", "dining table": "table", "dishrag": "towel", "disk brake": "wheel", "dogsled": "sled",
    "dome": "dome,building", "doormat": "mat,rug", "drilling platform": "platform", "drumstick": "-",
    "dumbbell": "weights", "Dutch oven": "pot", "electric fan": "fan", "electric guitar": "guitar",
    "electric locomotive": "train", "entertainment center": "television,tv", "espresso maker": "coffee",
    "face powder": "makeup", "feather boa": "feathers,boa", "file": "cabinet", "fireboat": "boat",
    "fire engine": "firetruck,truck", "fire screen": "fireplace", "flagpole": "flag,pole", "folding chair": "chair",
    "football helmet": "helmet,football", "four-poster": "bed", "freight car": "train", "French horn": "horn",
    "frying pan": "pan", "fur coat": "coat", "garbage truck": "truck", "gasmask": "mask", "gas pump": "gas",
    "goblet": "glass,wine", "go-kart": "kart,car", "golf ball": "ball,golf", "golfcart": "cart", "gondola": "boat",
    "grand piano": "piano", "grille": "car", "grocery store": "store,shop,market", "hair slide": "-",
    "hair spray": "-", "half track": "truck", "hamper": "basket", "hand blower": "dryer",
    "hand-held computer": "phone,computer", "hard disc": "-", "harvester": "tractor", "hatchet": "axe",
    "holster": "gun", "home theater": "television,tv", "hook": "-", "hoopskirt": "dress,skirt",
    "horizontal bar": "bar,gymnast", "horse cart": "horse,cart,carriage", "iPod": "ipod", "iron": "iron",
    "jack-o'-lantern": "pumpkin", "jean": "jeans", "jeep": "car,jeep", "jersey": "shirt,jersey",
    "jigsaw puzzle": "puzzle", "jinrikisha": "cart,rickshaw", "joystick": "-", "knee pad": "pads,knee",
    "knot": "rope", "lab coat": "coat", "lampshade": "lamp", "laptop": "laptop,computer", "lawn mower": "mower,lawnmower",
    "lens cap": "camera", "letter opener": "-", "library": "library,books", "lifeboat": "boat",
    "lighter": "lighter", "limousine": "car,limo,limousine", "liner": "ship,boat", "Loafer": "shoe,shoes",
    "lotion": "bottle", "loudspeaker": "speaker,speakers", "loupe": "-", "lumbermill": "mill", "magnetic compass": "compass",
    "mailbag": "bag", "maillot": "swimsuit", "manhole cover": "-", "measuring cup": "cup", "medicine chest": "cabinet",
    "megalith": "rocks,stones", "microwave": "microwave", "military uniform": "uniform,soldier", "milk can": "can",
    "minibus": "bus,van", "miniskirt": "skirt", "minivan": "car,van,minivan", "missile": "rocket,missile",
    "mixing bowl": "bowl", "mobile home": "trailer", "Model T": "car", "modem": "-", "monastery": "building,church",
    "monitor": "computer,monitor", "moped": "scooter,moped", "mortar": "-", "mortarboard": "cap,hat",
    "mosque": "mosque,building", "mosquito net": "net", "motor scooter": "scooter", "mountain bike": "bicycle,bike",
    "mountain tent": "tent", "mouse": "mouse,computer", "mousetrap": "-", "moving van": "truck,van", "muzzle": "dog",
    "nail": "-", "neck brace": "-", "nipple": "bottle", "notebook": "laptop,computer", "obelisk": "monument",
    "odometer": "-", "oil filter": "-", "oscilloscope": "-", "overskirt": "dress,skirt", "oxcart": "cow,ox,cart,cattle",
    "oxygen mask": "mask", "packet": "-", "paddle": "paddle,canoe", "paddlewheel": "boat", "padlock": "lock",
    "paintbrush": "brush,paint", "pajama": "pajamas", "panpipe": "flute", "paper towel": "towel",
    "parallel bars": "bars,gymnast", "park bench": "bench", "parking meter": "meter", "passenger car": "train",
    "pay-phone": "phone,telephone", "pedestal": "-", "pencil box": "box", "pencil sharpener": "-",
    "perfume": "bottle", "Petri dish": "dish", "photocopier": "copier,printer", "pick": "-", "pickelhaube": "helmet",
    "picket fence": "fence", "pickup": "truck", "piggy bank": "pig", "pill bottle": "bottle", "ping-pong ball": "ball",
    "pinwheel": "pinwheel", "pirate": "ship,boat", "pitcher": "jug,pitcher", "plane": "-", "planetarium": "dome,building",
    "plastic bag": "bag", "plate rack": "dishes,rack", "plow": "plow", "plunger": "-", "Polaroid camera": "camera",
    "pole": "pole", "police van": "van,police", "pool table": "table,pool", "pop bottle": "bottle,soda",
    "potter's wheel": "pottery,clay", "power drill": "drill", "prayer rug": "rug", "printer": "printer",
    "projectile": "rocket", "puck": "puck,hockey", "punching bag": "bag", "purse": "purse,bag", "quill": "pen",
    "quilt": "blanket,quilt", "racer": "car,racecar", "racket": "racket,tennis", "radio telescope": "dish,telescope",
    "rain barrel": "barrel", "recreational vehicle": "rv,camper", "reel": "-", "reflex camera": "camera",
    "remote control": "remote", "revolver": "gun", "rifle": "gun,rifle", "rocking chair": "chair",
    "rotisserie": "oven", "rubber eraser": "eraser", "rugby ball": "ball,rugby", "rule": "ruler",
    "running shoe": "shoe,shoes,sneakers", "safe": "-", "safety pin": "pin", "saltshaker": "salt", "sax": "saxophone,sax",
    "scabbard": "sword", "scale": "scale", "school bus": "bus", "schooner": "boat,ship,sailboat",
    "scoreboard": "scoreboard", "screen": "screen,computer", "screw": "-", "seat belt": "car", "sewing machine": "machine",
    "shield": "shield", "shoe shop": "shoes,store,shop", "shoji": "door", "shopping basket": "basket",
    "shopping cart": "cart", "ski": "skis,ski", "ski mask": "mask", "sleeping bag": "sleeping,bag",
    "slide rule": "ruler", "sliding door": "door", "slot": "-", "snowplow": "truck,plow", "soap dispenser": "soap",
    "soccer ball": "ball,soccer", "solar dish": "dish", "sombrero": "hat,sombrero", "soup bowl": "bowl,soup",
    "space bar": "keyboard", "space heater": "heater", "space shuttle": "shuttle,rocket", "speedboat": "boat",
    "spider web": "web", "spindle": "-", "sports car": "car", "spotlight": "light,lights", "steam locomotive": "train",
    "steel arch bridge": "bridge", "steel drum": "drum,drums", "stole": "scarf", "stone wall": "wall",
    "stopwatch": "watch", "strainer": "-", "streetcar": "trolley,train", "stretcher": "-", "studio couch": "couch",
    "stupa": "temple", "submarine": "submarine", "suit": "suit", "sundial": "-", "sunglass": "sunglasses",
    "sunglasses": "sunglasses", "sunscreen": "bottle", "suspension bridge": "bridge", "swab": "-",
    "sweatshirt": "sweatshirt,shirt", "swimming trunks": "trunks,shorts", "swing": "swing", "switch": "-",
    "table lamp": "lamp", "tank": "tank", "tape player": "radio", "teddy": "teddy,bear", "television": "television,tv",
    "tennis ball": "ball,tennis", "thatch": "roof,hut", "theater curtain": "curtain,stage", "thresher": "tractor",
    "tile roof": "roof", "tobacco shop": "shop,store", "toilet seat": "toilet", "torch": "torch",
    "totem pole": "pole", "tow truck": "truck", "toyshop": "toys,store,shop", "trailer truck": "truck",
    "trench coat": "coat", "trimaran": "boat", "triumphal arch": "arch", "trolleybus": "bus",
    "typewriter keyboard": "typewriter", "upright": "piano", "vacuum": "vacuum", "vault": "-", "velvet": "-",
    "vending machine": "machine", "vestment": "robe,priest", "viaduct": "bridge", "volleyball": "volleyball,ball",
    "waffle iron": "-", "wall clock": "clock", "wardrobe": "closet,wardrobe", "warplane": "airplane,plane,jet",
    "washbasin": "sink", "washer": "washer", "water bottle": "bottle,water", "water jug": "jug",
    "water tower": "tower", "whiskey jug": "jug", "window screen": "window", "window shade": "window,blinds",
    "Windsor tie": "tie", "wine bottle": "bottle,wine", "wing": "airplane,plane", "wooden spoon": "spoon",
    "wool": "yarn,wool", "worm fence": "fence", "wreck": "boat,ship", "yawl": "boat,sailboat", "yurt": "tent",
    "web site": "-", "comic book": "book,comic", "crossword puzzle": "newspaper,puzzle", "street sign": "sign",
    "traffic light": "light", "book jacket": "book", "menu": "menu", "guacamole": "food", "consomme": "soup",
    "hot pot": "food,soup", "trifle": "dessert", "ice cream": "dessert,cream", "ice lolly": "popsicle",
    "French loaf": "bread", "mashed potato": "potatoes,food", "head cabbage": "cabbage", "spaghetti squash": "squash",
    "acorn squash": "squash", "butternut squash": "squash", "bell pepper": "pepper", "cardoon": "-",
    "Granny Smith": "apple", "jackfruit": "fruit", "custard apple": "fruit", "hay": "hay", "carbonara": "pasta,food",
    "chocolate sauce": "chocolate", "dough": "dough", "meat loaf": "meat,food", "potpie": "pie,food",
    "burrito": "burrito,food", "red wine": "wine", "espresso": "coffee,cup", "eggnog": "drink",
    "alp": "mountain,mountains", "bubble": "bubbles,bubble", "coral reef": "reef,coral", "geyser": "-",
    "lakeside": "lake", "promontory": "cliff", "sandbar": "beach,sand", "seashore": "beach,ocean", "volcano": "mountain",
    "ballplayer": "player,baseball", "groom": "groom,man", "scuba diver": "diver,scuba", "rapeseed": "flowers,field",
    "daisy": "flower,flowers,daisy", "yellow lady's slipper": "flower", "corn": "corn", "acorn": "-", "hip": "-",
    "buckeye": "-", "coral fungus": "fungus", "agaric": "mushroom", "gyromitra": "mushroom", "stinkhorn": "mushroom",
    "earthstar": "mushroom", "hen-of-the-woods": "mushroom", "bolete": "mushroom", "ear": "corn",
    "toilet tissue": "toilet,paper", "cheeseburger": "burger,hamburger", "hotdog": "hotdog", "cup": "cup",
    "plate": "plate,food", "lemon": "lemon,fruit", "orange": "orange,fruit", "banana": "banana,fruit",
    "strawberry": "strawberry,fruit", "pineapple": "pineapple,fruit", "pomegranate": "fruit", "fig": "fruit",
    "acoustic guitar": "guitar", "baseball": "baseball,ball", "basketball": "basketball,ball",
}
# a class named by the index where its label text is shared ("crane" the bird at 134, "crane" the machine at 517)
BY_INDEX = {134: "bird", 517: "crane", 21: "bird"}


def words_for(index: int, label: str) -> str:
    if index in BY_INDEX:
        return BY_INDEX[index]
    for (lo, hi), words in RANGES:
        if lo <= index <= hi:
            return words
    if label in OBJECTS:
        return OBJECTS[label]
    return label.replace("-", " ").split()[-1].lower()  # "modifier noun" names: the head noun comes last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=Path, default=None, help="imagenet1k_labels.txt (default: the shared weights folder)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    labels_path = a.labels
    if labels_path is None:
        from img2text2img import locations

        wd = locations.weights_dir()
        if wd is None:
            raise SystemExit("no weights folder found; pass --labels")
        labels_path = wd / "imagenet1k_labels.txt"
    labels = labels_path.read_text(encoding="utf-8").splitlines()
    if len(labels) != 1000:
        raise SystemExit(f"{labels_path}: {len(labels)} lines, expected 1000")
    rows = ["# index\timagenet_label\twords (comma-separated, main word first; - = no plain word)"]
    for i, label in enumerate(labels):
        rows.append(f"{i}\t{label}\t{words_for(i, label)}")
    a.out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    named = sum(1 for r in rows[1:] if not r.endswith("\t-"))
    print(f"wrote {a.out}: {named} of 1000 classes named")


if __name__ == "__main__":
    main()
