"""Word lists shared by the built-in tasks (common words, mostly one token in BPE
vocabularies)."""

NAMES = ["Mary", "John", "Alice", "Bob", "James", "Michael", "David", "Sarah", "Emma", "Tom",
         "Paul", "Anna", "Lisa", "Mark", "Kate", "Daniel", "Laura", "Peter", "Jessica", "Robert",
         "Linda", "Susan", "Kevin", "Jason", "Rachel", "Amy", "Eric", "Steven", "Karen", "Brian"]
PLACES = ["store", "park", "school", "beach", "restaurant", "office", "hospital", "garden",
          "station", "library", "market", "museum"]
OBJECTS = ["drink", "book", "ring", "bone", "kiss", "snack", "necklace", "basketball", "gift",
           "letter", "ball", "computer"]
NOUNS = ["apple", "river", "chair", "table", "window", "garden", "horse", "paper", "music",
         "water", "light", "stone", "cloud", "bread", "house", "dream", "glass", "plant",
         "money", "night", "train", "sugar", "field", "heart", "phone", "floor", "story",
         "shirt", "beach", "sound", "party", "power", "smile", "world", "color", "forest",
         "dog", "cat", "car", "tree", "book", "door", "fish", "bird", "road", "milk"]
ITEMS = ["box", "key", "coin", "book", "ring", "cup", "map", "bell", "shoe", "hat", "pen",
         "card", "ball", "lamp", "watch", "rope", "bag", "doll"]
GROCERIES = ["apples", "bread", "milk", "eggs", "rice", "cheese", "butter", "coffee", "tea",
             "pasta", "onions", "carrots", "sugar", "salt", "flour", "beans"]
NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                "eighteen", "nineteen", "twenty"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
VERBS_PAST = ["born", "married", "hired", "promoted", "elected", "seen", "injured", "honored"]
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo",
    "Greece": "Athens", "Canada": "Ottawa", "Austria": "Vienna", "Poland": "Warsaw",
    "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm", "Portugal": "Lisbon",
    "Kenya": "Nairobi", "Peru": "Lima", "Cuba": "Havana", "England": "London",
    "Hungary": "Budapest", "Denmark": "Copenhagen", "Finland": "Helsinki", "India": "Delhi",
    "Thailand": "Bangkok", "Turkey": "Ankara", "Iran": "Tehran", "Argentina": "Buenos",
    "Australia": "Canberra", "Belgium": "Brussels", "Chile": "Santiago", "Mexico": "Mexico",
}
SUBJECTS = [("author", "authors"), ("doctor", "doctors"), ("teacher", "teachers"),
            ("farmer", "farmers"), ("pilot", "pilots"), ("student", "students"),
            ("manager", "managers"), ("painter", "painters"), ("officer", "officers"),
            ("senator", "senators"), ("driver", "drivers"), ("singer", "singers")]
ACRONYM_WORDS = ["Central", "Intelligence", "Agency", "National", "Security", "Council",
                 "Federal", "Bureau", "Investigation", "World", "Health", "Organization",
                 "Global", "Research", "Institute", "Public", "Energy", "Union", "Marine",
                 "Transport", "Office", "Digital", "Education", "Network", "Royal", "Kitchen",
                 "Labor", "Young", "People", "Visual", "Art", "Hospital"]
