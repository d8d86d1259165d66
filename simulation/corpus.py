"""The generated world of the embedded default: requests a multi-domain assistant gets, and its plain "base" replies.

Everything here is a pure function of a `random.Random`: the tiny model's pretraining corpus and the simulated users'
requests are drawn from the same domains, so the model is in-distribution for the product it stands in for.

The base style is deliberately plain: no greeting, no sign-off, no bullet points, no "Next step" line. Those are
what simulated users want (see `simulation.preferences`), so the base model misses them until the flywheel turns.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DOMAINS = ("support", "scheduling", "writing", "tech", "travel", "cooking")

NAMES = [
    "Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Irene", "Jonas", "Kara", "Liam", "Maya",
    "Noah", "Olivia", "Pedro", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Yara", "Zoe", "Marco",
    "Priya", "Chen", "Sofia", "Lucas", "Amira", "Oscar", "Nina", "Theo", "Leah", "Ravi",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["9 am", "9:30 am", "10 am", "11 am", "noon", "1 pm", "2 pm", "2:30 pm", "3 pm", "4 pm", "5 pm"]
PRODUCTS = [
    "blender", "desk lamp", "backpack", "coffee grinder", "phone case", "pair of headphones", "winter jacket",
    "water bottle", "keyboard", "office chair", "yoga mat", "set of pans", "rain jacket", "monitor stand",
    "electric kettle", "pair of running shoes", "travel mug", "bookshelf", "wireless mouse", "table fan",
]
PLANS = ["basic plan", "premium plan", "family plan", "monthly plan", "annual plan", "team plan"]
CITIES = [
    "Lisbon", "Berlin", "Paris", "Rome", "Madrid", "Vienna", "Prague", "Dublin", "Oslo", "Athens", "Tokyo",
    "Boston", "Chicago", "Toronto", "Seattle", "Denver", "Amsterdam", "Barcelona", "Edinburgh", "Kyoto",
]
TOPICS = [
    "the quarterly budget", "the new website", "the hiring plan", "the product launch", "the team offsite",
    "the customer survey", "the office move", "the training program", "the spring campaign", "the sales report",
    "the design review", "the security audit", "the onboarding guide", "the holiday schedule",
]
DISHES = [
    "pasta with tomato sauce", "vegetable soup", "banana bread", "chicken curry", "a green salad", "pancakes",
    "fried rice", "lentil stew", "roast potatoes", "an omelette", "chocolate cookies", "bean chili",
]
DEVICES = ["laptop", "phone", "printer", "tablet", "router", "smart TV", "desktop computer", "smartwatch"]
NUMBERS = ["two", "three", "four", "five", "six"]
DURATIONS = ["30 minutes", "45 minutes", "an hour", "90 minutes"]


def _order(rng: random.Random) -> str:
    return f"#{rng.randint(1000, 99999)}"


@dataclass
class Turn:
    """One request and the base-style reply to it."""

    request: str
    reply: str


@dataclass
class Conversation:
    domain: str
    intent: str
    turns: list[Turn] = field(default_factory=list)


def _join(rng: random.Random, core: list[str], optional: list[str], k_optional: tuple[int, int] = (1, 2)) -> str:
    """A reply: the core sentences in order, then a few optional ones (shuffled) so replies vary in length."""
    n = rng.randint(*k_optional)
    extra = rng.sample(optional, min(n, len(optional)))
    return " ".join(core + extra)


# --- domain generators: each returns (intent, request, reply, follow_up_fn) --------------------------------------
# A follow-up function takes (rng, previous reply) and returns the next Turn of the same conversation.


def _follow_shorter(rng: random.Random, prev: str) -> Turn:
    request = rng.choice([
        "Can you make that shorter?", "That is a bit long. Can you shorten it?", "Please give me a shorter version.",
        "Could you say that in fewer words?",
    ])
    sentences = [s.strip() + "." for s in prev.split(".") if s.strip()]
    return Turn(request, " ".join(sentences[:2]))


def _follow_thanks_more(fallback: list[str]):
    def follow(rng: random.Random, prev: str) -> Turn:
        request = rng.choice([
            "Thanks. What if that does not work?", "And if that does not help, what then?",
            "What should I do if the problem comes back?", "Is there anything else I can try?",
        ])
        return Turn(request, " ".join(rng.sample(fallback, min(len(fallback), rng.randint(2, 3)))))

    return follow


def support(rng: random.Random):
    intent = rng.choice(["late_order", "refund", "password", "double_charge", "cancel", "damaged"])
    order, product, day, day2 = _order(rng), rng.choice(PRODUCTS), rng.choice(DAYS), rng.choice(DAYS)
    plan = rng.choice(PLANS)
    fallback = [
        "The support team can look into it directly if you send the order number and a short description.",
        "You can also reach the team by phone on weekdays between 9 am and 6 pm.",
        "A case number is created for every request, so nothing gets lost.",
        "Most cases like this are solved within two business days.",
    ]
    if intent == "late_order":
        request = rng.choice([
            f"My order {order} has not arrived yet. Can you check?",
            f"Where is my order {order}? It was supposed to come on {day}.",
            f"I ordered a {product} last week and it still has not shown up.",
            f"The {product} I ordered has not been delivered. What is going on?",
        ])
        reply = _join(rng, [
            rng.choice([f"The order was shipped on {day} and is on its way.",
                        f"Your {product} left the warehouse on {day}.",
                        "The package is with the carrier and is moving normally."]),
            "Deliveries usually take three to five business days.",
        ], [
            "You can follow the package from the Orders page in your account.",
            f"If it has not arrived by {day2}, a replacement can be sent at no cost.",
            "The tracking number is in the confirmation email.",
            "Delays are sometimes caused by weather or holidays.",
        ])
    elif intent == "refund":
        request = rng.choice([
            f"I want to return the {product} I bought. How do I get a refund?",
            f"How can I get my money back for order {order}?",
            f"The {product} is not what I expected. Can I send it back?",
        ])
        reply = _join(rng, [
            "Returns are accepted within 30 days of delivery.",
            rng.choice(["Start the return from the Orders page and print the label.",
                        "Open the order in your account and choose Return item.",
                        "Request a return from your account and a prepaid label will be emailed to you."]),
        ], [
            "The refund goes back to the original payment method.",
            "Refunds are processed within five business days after the item arrives.",
            f"Pack the {product} in its original box if you still have it.",
            "There is no fee for returns of unused items.",
        ])
    elif intent == "password":
        request = rng.choice([
            "I forgot my password and cannot log in.", "How do I reset my password?",
            "My account is locked after too many login attempts.", "The password reset email never came.",
        ])
        reply = _join(rng, [
            "Go to the login page and choose Forgot password.",
            "A reset link will be sent to the email address on your account.",
        ], [
            "The link is valid for one hour.",
            "Check your spam folder if the email does not appear within a few minutes.",
            "After too many attempts the account unlocks by itself after 15 minutes.",
            "Choose a password with at least ten characters.",
        ])
    elif intent == "double_charge":
        request = rng.choice([
            f"I was charged twice for order {order}.", "There are two charges on my card for the same purchase.",
            f"Why was I billed twice for the {plan}?",
        ])
        reply = _join(rng, [
            "A second charge is often a temporary hold that disappears within three days.",
            "If both charges are still there after that, the extra one will be refunded.",
        ], [
            "You can see every payment on the Billing page of your account.",
            "Your bank statement may show the hold as pending.",
            "Send a screenshot of the statement and the refund can be started right away.",
        ])
    elif intent == "cancel":
        request = rng.choice([
            f"How do I cancel my {plan}?", "I want to cancel my subscription.",
            f"Can I stop the {plan} before the next payment?",
        ])
        reply = _join(rng, [
            "You can cancel at any time from the Subscription page in your account settings.",
            "The plan stays active until the end of the current billing period.",
        ], [
            "No further payments will be taken after you cancel.",
            "Your data is kept for 30 days in case you change your mind.",
            f"You can also switch to the basic plan instead of cancelling.",
        ])
    else:
        request = rng.choice([
            f"The {product} arrived broken.", f"My {product} was damaged in the box.",
            f"Order {order} came with a cracked {product}.",
        ])
        reply = _join(rng, [
            "A damaged item can be replaced or refunded, whichever you prefer.",
            "Take a photo of the damage and attach it to a message from the Orders page.",
        ], [
            "You do not need to send the broken item back.",
            "A replacement usually ships within two business days.",
            "The carrier will be informed so it does not happen again.",
        ])
    follow = rng.choice([_follow_shorter, _follow_thanks_more(fallback)])
    return intent, request, reply, follow


def scheduling(rng: random.Random):
    intent = rng.choice(["new_meeting", "reschedule", "team_slot", "reminder", "time_zone"])
    name, name2 = rng.sample(NAMES, 2)
    day, day2 = rng.sample(DAYS[:5], 2)
    time, time2 = rng.sample(TIMES, 2)
    topic, dur = rng.choice(TOPICS), rng.choice(DURATIONS)
    city, city2 = rng.sample(CITIES, 2)
    if intent == "new_meeting":
        request = rng.choice([
            f"Set up a meeting with {name} on {day} at {time} about {topic}.",
            f"Can you book {dur} with {name} on {day}?",
            f"I need a meeting with {name} and {name2} this {day} to discuss {topic}.",
        ])
        reply = _join(rng, [
            f"A meeting with {name} is booked for {day} at {time}.",
            f"It is set for {dur} and the invitation has been sent.",
        ], [
            f"The agenda lists {topic} as the main item.",
            "A video link is included in the invitation.",
            f"{name} will get a reminder 15 minutes before it starts.",
            "The room on the second floor is free at that time.",
        ])
        follow_req = f"Actually, can we move it to {day2}?"
        follow_rep = f"The meeting is now on {day2} at {time}. {name} has been sent the updated invitation."
    elif intent == "reschedule":
        request = rng.choice([
            f"Move my {day} meeting with {name} to {day2}.",
            f"I cannot make the {time} call on {day}. Can we push it?",
            f"Please reschedule the {topic} meeting to {day2} at {time2}.",
        ])
        reply = _join(rng, [
            f"The meeting has been moved to {day2} at {time2}.",
            "Everyone on the invitation has been told about the change.",
        ], [
            f"The old slot on {day} is now free in your calendar.",
            f"{name} accepted the new time.",
            "The video link stays the same.",
        ])
        follow_req = f"What if {name} cannot make it either?"
        follow_rep = f"Then the next free slot for both of you is {day2} at {time}. It can be booked as soon as you confirm."
    elif intent == "team_slot":
        n = rng.choice(NUMBERS)
        request = rng.choice([
            f"Find a time next week when {n} people on my team are free for {dur}.",
            f"When can the whole team meet for {dur} next week?",
            f"I need a slot for {topic} with {name}, {name2} and me.",
        ])
        reply = _join(rng, [
            f"The first time everyone is free is {day} at {time}.",
            f"{day2} at {time2} also works for all of you.",
        ], [
            "Mornings are busier, so the afternoon slots are easier to keep.",
            "The invitation can be sent as soon as you pick one.",
            f"{name} has a conflict on the other days.",
        ])
        follow_req = "Book the first one."
        follow_rep = f"The meeting is booked for {day} at {time}. Invitations have gone out to the team."
    elif intent == "reminder":
        request = rng.choice([
            f"Remind me to call {name} on {day} at {time}.",
            f"Set a reminder for the {topic} deadline on {day}.",
            f"Can you remind me about the dentist on {day}?",
        ])
        reply = _join(rng, [
            f"A reminder is set for {day} at {time}.",
            "You will get a notification on your phone and by email.",
        ], [
            "You can change or delete it from the Reminders list.",
            "A second reminder will come one hour before.",
        ], (0, 1))
        follow_req = "Make it a day earlier."
        follow_rep = "The reminder now comes one day earlier at the same time."
    else:
        request = rng.choice([
            f"What time is {time} in {city} for someone in {city2}?",
            f"I have a call with {name} in {city2}. When is a good time if I am in {city}?",
            f"How do I schedule across time zones with a team in {city2}?",
        ])
        reply = _join(rng, [
            f"The calendar shows each person the meeting in their own time zone.",
            f"For a team in {city} and {city2}, late morning for one side is usually a good overlap.",
        ], [
            "Check the time zone setting in your profile first.",
            "Avoid the first and last hour of anyone's working day.",
            "Daylight saving changes can shift the overlap by an hour.",
        ])
        follow_req = "And what if we are both busy in the morning?"
        follow_rep = f"Then {time2} in {city} is the next best time, since it falls inside working hours for both of you."
    fixed = lambda rng_, prev: Turn(follow_req, follow_rep)  # noqa: E731
    follow = rng.choice([fixed, fixed, _follow_shorter])
    return intent, request, reply, follow


def writing(rng: random.Random):
    intent = rng.choice(["thanks_note", "subject_line", "ask_email", "product_blurb", "summary"])
    name = rng.choice(NAMES)
    topic, product, day = rng.choice(TOPICS), rng.choice(PRODUCTS), rng.choice(DAYS)
    if intent == "thanks_note":
        what = rng.choice(["the help with the move", "the birthday gift", "covering my shift", "the great dinner",
                           "the advice on the project", "the kind words", "the ride to the airport"])
        request = rng.choice([f"Write a short thank-you note to {name} for {what}.",
                              f"Help me thank {name} for {what}.", f"Draft a thank you message to {name} for {what}."])
        reply = _join(rng, [
            f"Dear {name}, thank you so much for {what}.",
            rng.choice(["It meant a lot to me.", "It made a real difference.", "I am very grateful."]),
        ], [
            "I hope I can return the favor soon.",
            "Let me know when you are free for a coffee.",
            "You made the whole week easier.",
        ])
    elif intent == "subject_line":
        request = rng.choice([f"Suggest a subject line for an email about {topic}.",
                              f"Give me a title for a note on {topic}."])
        t = topic.removeprefix("the ")
        reply = _join(rng, [
            f"A clear subject line is: Update on {t}.",
            f"Another option is: Next steps for {t}.",
        ], [
            "Short subject lines are easier to read on a phone.",
            f"Add a date if the email is about a deadline, such as: {t.capitalize()} by {day}.",
        ])
    elif intent == "ask_email":
        ask = rng.choice(["feedback on the draft", "the numbers for the report", "a short call this week",
                          "an update on the invoice", "their slides for the meeting"])
        request = rng.choice([f"Write an email asking {name} for {ask}.", f"Draft a polite email to {name} asking for {ask}."])
        reply = _join(rng, [
            f"Dear {name}, I am writing to ask for {ask}.",
            f"It would help me finish {topic} by {day}.",
        ], [
            "Please let me know if anything is unclear.",
            "Thank you in advance for your time.",
            "I am happy to talk it through if that is easier.",
        ])
    elif intent == "product_blurb":
        adj = rng.sample(["light", "durable", "quiet", "simple", "compact", "elegant", "sturdy", "affordable"], 2)
        request = rng.choice([f"Write a short product description for a {product}.",
                              f"Describe our new {product} in a few sentences."])
        reply = _join(rng, [
            f"This {product} is {adj[0]} and {adj[1]}.",
            "It is made to be used every day and to last for years.",
        ], [
            "It comes in three colors.",
            "Setup takes less than five minutes.",
            "It is backed by a two year warranty.",
            "It fits easily in a small home or office.",
        ])
    else:
        city = rng.choice(CITIES)
        text = " ".join(_general_sentence(rng) for _ in range(3))
        request = rng.choice([f"Summarize this in one or two sentences: {text}",
                              f"Give me the short version of this: {text}"])
        first = text.split(". ")[0].rstrip(".") + "."
        reply = f"In short, {first[0].lower()}{first[1:]} The rest adds detail about the same event."
        del city
    follow = rng.choice([
        _follow_shorter,
        lambda rng_, prev: Turn(
            rng_.choice(["Make it more formal.", "Can you make it a little warmer?", "Make it sound less stiff."]),
            prev.replace("so much", "very much").replace("I am", "I'm") if "I am" in prev else prev,
        ),
    ])
    return intent, request, reply, follow


def tech(rng: random.Random):
    intent = rng.choice(["wifi", "slow", "printer", "update", "battery"])
    device = rng.choice(DEVICES)
    fallback = [
        f"Restart the {device} and the router, then try again.",
        "Check whether other devices have the same problem.",
        "If nothing works, a technician can take a look remotely.",
        "Write down any error message you see, it helps to find the cause.",
    ]
    if intent == "wifi":
        request = rng.choice([f"My {device} keeps dropping the wifi.", f"Why can my {device} not connect to the internet?",
                              "The wifi is very slow in the evening."])
        reply = _join(rng, [
            "Wifi problems are often caused by distance from the router or by interference.",
            f"Move the {device} closer to the router and restart both.",
        ], [
            "Evenings are slower because more people in the area are online.",
            "Forget the network in the settings and join it again.",
            "Updating the router firmware can also help.",
        ])
    elif intent == "slow":
        request = rng.choice([f"My {device} has become really slow.", f"How can I speed up my {device}?"])
        reply = _join(rng, [
            "A slow device usually has too many programs running or too little free storage.",
            "Close the apps you are not using and restart it.",
        ], [
            "Free up space by deleting old downloads and large files.",
            "Check for system updates, they often fix performance problems.",
            "Turn off programs that start automatically.",
        ])
    elif intent == "printer":
        request = rng.choice(["My printer says it is offline.", "The printer will not print from my laptop.",
                              "How do I connect a new printer?"])
        reply = _join(rng, [
            "Make sure the printer is on the same network as your computer.",
            "Remove the printer from the settings and add it again.",
        ], [
            "Restart the printer and wait a minute before printing.",
            "Installing the latest driver from the maker's website often fixes it.",
            "Check that there is paper and that no error light is on.",
        ])
    elif intent == "update":
        request = rng.choice([f"Should I install the update on my {device}?", f"The update on my {device} failed."])
        reply = _join(rng, [
            "Updates fix security problems, so it is a good idea to install them.",
            f"Connect the {device} to power and to a stable network before you start.",
        ], [
            "Back up your files first in case something goes wrong.",
            "If it fails, restart and try the update again.",
            "Large updates can take 20 minutes or more.",
        ])
    else:
        request = rng.choice([f"The battery on my {device} drains fast.", f"How can I make my {device} battery last longer?"])
        reply = _join(rng, [
            "Screen brightness and apps running in the background use the most power.",
            "Lower the brightness and close apps you do not need.",
        ], [
            "Battery saver mode can add a few hours.",
            "Old batteries hold less charge and may need to be replaced.",
            "Turn off location services for apps that do not need them.",
        ])
    return intent, request, reply, rng.choice([_follow_shorter, _follow_thanks_more(fallback)])


def travel(rng: random.Random):
    intent = rng.choice(["packing", "itinerary", "flight_change", "budget"])
    city, n, day = rng.choice(CITIES), rng.choice(NUMBERS), rng.choice(DAYS)
    if intent == "packing":
        request = rng.choice([f"What should I pack for {n} days in {city}?", f"Help me pack for a trip to {city}."])
        reply = _join(rng, [
            "Pack clothes you can layer, since the weather can change during the day.",
            "Bring comfortable shoes for walking.",
        ], [
            "A small umbrella is useful in spring and autumn.",
            "Keep your documents and chargers in your hand luggage.",
            "Roll your clothes to save space.",
        ])
    elif intent == "itinerary":
        request = rng.choice([f"Plan {n} days in {city} for me.", f"What can I do in {city} in {n} days?"])
        reply = _join(rng, [
            f"Spend the first day walking around the old center of {city} to get your bearings.",
            "On the second day visit a museum in the morning and a park in the afternoon.",
        ], [
            "Leave one afternoon free for anything you discover on the way.",
            "Book popular sights a few days ahead.",
            "Try a local market for lunch.",
        ])
    elif intent == "flight_change":
        request = rng.choice([f"Can I change my flight to {city} to {day}?", "My flight was cancelled. What now?"])
        reply = _join(rng, [
            "Most airlines let you change a flight from their website or app.",
            "A cancelled flight gives you the right to a new flight or a refund.",
        ], [
            "Fare differences may apply when you change the date.",
            "Keep your receipts if you need a hotel for the night.",
            "Calling early in the morning usually means shorter waits.",
        ])
    else:
        request = rng.choice([f"How much money do I need for a week in {city}?", f"How can I travel to {city} on a budget?"])
        reply = _join(rng, [
            "Accommodation is usually the largest cost, so book it early.",
            "Public transport passes for a few days save a lot compared to single tickets.",
        ], [
            "Eating where the locals eat is cheaper than near the sights.",
            "Many museums are free on one day of the month.",
            "Travel outside the summer months for lower prices.",
        ])
    return intent, request, reply, _follow_shorter


def cooking(rng: random.Random):
    intent = rng.choice(["recipe", "substitute", "storage"])
    dish = rng.choice(DISHES)
    if intent == "recipe":
        request = rng.choice([f"How do I make {dish}?", f"Give me a simple recipe for {dish}.",
                              f"What do I need to cook {dish}?"])
        reply = _join(rng, [
            f"For {dish} you need a few basic ingredients and about {rng.choice(DURATIONS)}.",
            "Prepare everything before you start cooking.",
            "Cook on medium heat and taste as you go.",
        ], [
            "Season with salt and pepper at the end.",
            "It keeps in the fridge for two days.",
            "Fresh herbs make a big difference.",
        ])
    elif intent == "substitute":
        item = rng.choice(["eggs", "butter", "milk", "sugar", "flour", "cream"])
        request = rng.choice([f"What can I use instead of {item}?", f"I have no {item}. What can I use for {dish}?"])
        reply = _join(rng, [
            f"There are several good replacements for {item}.",
            "The right one depends on whether you are baking or cooking.",
        ], [
            "Oil works in place of butter in most cakes.",
            "Plant milk can replace milk one to one.",
            "A mashed banana can replace an egg in sweet recipes.",
        ])
    else:
        request = rng.choice([f"How long does {dish} keep?", f"Can I freeze {dish}?"])
        reply = _join(rng, [
            "Cooked food keeps in the fridge for two to three days in a closed container.",
            "Most dishes can be frozen for up to three months.",
        ], [
            "Let it cool before you put it in the fridge.",
            "Reheat it until it is hot all the way through.",
            "Label the container with the date.",
        ])
    return intent, request, reply, _follow_shorter


GENERATORS = {
    "support": support, "scheduling": scheduling, "writing": writing, "tech": tech, "travel": travel,
    "cooking": cooking,
}


def sample_conversation(rng: random.Random, domain: str | None = None, max_turns: int = 2) -> Conversation:
    domain = domain or rng.choice(DOMAINS)
    intent, request, reply, follow = GENERATORS[domain](rng)
    conv = Conversation(domain, intent, [Turn(request, reply)])
    while len(conv.turns) < max_turns and rng.random() < 0.35:
        conv.turns.append(follow(rng, conv.turns[-1].reply))
    return conv


# --- general English: a broad vocabulary so that text from outside the domains does not fall apart ----------------

_NOUNS = """time year people way day man woman child world life hand part place case week company system program
question work government number night point home water room mother area money story fact month lot right study book
eye job word business issue side kind head house service friend father power hour game line end member law car city
community name president team minute idea kid body information back parent face others level office door health
person art war history party result change morning reason research girl guy moment air teacher force education
river mountain forest village garden window bridge island ocean valley desert station library museum market
hospital school church factory farm kitchen street road harbor castle tower field hill lake beach sky cloud storm
rain snow wind sun moon star planet stone tree flower leaf seed bird horse dog cat fish insect animal doctor nurse
farmer writer painter singer soldier scientist engineer student artist driver pilot lawyer judge king queen
village neighbor stranger traveler language music song letter newspaper picture movie camera computer machine
engine wheel bottle glass cup plate table chair bed wall floor roof paper pencil coin ticket map clock key bag
box basket boat ship train plane bicycle journey adventure discovery experiment theory evidence memory dream hope
fear courage patience freedom justice culture tradition festival holiday season century decade generation
energy climate weather temperature pressure distance speed weight height surface material metal wood glass cotton
silver gold iron bread cheese fruit apple orange vegetable rice soup tea coffee sugar salt butter oil""".split()
_VERBS = """walked found built carried opened closed watched noticed remembered explained discovered painted
followed visited crossed studied described wrote read heard finished started changed moved helped answered asked
learned taught measured collected repaired designed planted cleaned shared counted compared traveled climbed
carried invented admired borrowed protected celebrated prepared delivered organized believed imagined""".split()
_ADJS = """old new young small large long short bright dark quiet loud warm cold early late simple strange
beautiful ancient modern busy empty full heavy light narrow wide deep shallow careful curious famous gentle honest
patient proud quick slow rare rich poor safe sharp smooth soft strong tired wild wise green blue red yellow white
black golden wooden northern southern eastern western local foreign public private ordinary unusual important
difficult easy clear famous friendly hungry lucky nervous peaceful serious useful""".split()
_ADVS = """slowly quickly carefully quietly suddenly finally usually often rarely always never gently proudly
happily sadly easily almost nearly""".split()
_CONNECT = ["After that", "Later", "Meanwhile", "For many years", "In the spring", "At the end of the day",
            "Some time later", "Because of this", "Even so", "In the meantime", "Over the next few weeks",
            "By the evening", "Long ago", "Every summer", "Not long after"]

# More of everyday English (news, work, science, health, society), so the vocabulary is not just the domains'.
_NOUNS += """economy price cost market bank loan rate budget tax income salary profit loss trade industry
government election vote council parliament minister policy law court police crime safety risk security
health disease doctor patient medicine treatment hospital vaccine sleep exercise diet habit stress brain heart
science research study experiment data result evidence theory researcher university laboratory species
environment pollution climate forest ocean energy fuel electricity battery solar wind carbon emission
technology software internet network device screen phone website platform user account password privacy
education student teacher lesson class exam degree school course skill knowledge language
society family community neighbor population citizen culture religion tradition festival custom
sport match player coach team league season score goal victory defeat training stadium
art music film novel poem theater gallery artist author audience performance
transport traffic vehicle railway airport passenger journey route distance delay schedule
housing rent apartment building neighborhood construction property owner tenant
food meal recipe ingredient restaurant kitchen farmer harvest crop grain vegetable fruit
memory attention decision problem solution answer question opinion argument debate agreement
quarter month week weekend morning evening season decade century future past present""".split()
_VERBS += """raised lowered increased reduced improved argued warned debated published announced reported
confirmed denied suggested proposed approved rejected supported opposed managed developed produced
provided received reached remained became seemed appeared included involved considered expected
continued allowed offered required reduced recovered decided returned""".split()
_ADJS += """economic political social public national international global financial medical scientific
digital environmental cultural personal professional common possible likely similar different recent
current major minor central local regional annual monthly daily weekly higher lower stubborn stable
significant general specific available necessary popular successful healthy dangerous expensive cheap""".split()


def _news_sentence(rng: random.Random) -> str:
    n1, n2, n3 = rng.sample(_NOUNS, 3)
    a1, a2 = rng.sample(_ADJS, 2)
    v1, v2 = rng.sample(_VERBS, 2)
    t = rng.randrange(6)
    if t == 0:
        return f"Experts {v1} that the {a1} {n1} could affect the {n2} and the {n3} this year."
    if t == 1:
        return f"The {n1} {v1} a {a1} plan for the {n2}, while critics {v2} it."
    if t == 2:
        return f"According to a {a1} study, {n1} and {n2} are linked to {a2} {n3}."
    if t == 3:
        return f"Officials {v1} new rules on {n1}, {n2} and {n3} after a {a1} debate."
    if t == 4:
        return f"Researchers {v1} that {a1} {n1}s improve {n2} in older adults."
    return f"Prices for {n1} and {n2} {v1} again, and {a1} families {v2} the change."


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _general_sentence(rng: random.Random) -> str:
    n1, n2, n3 = rng.sample(_NOUNS, 3)
    a1, a2 = rng.sample(_ADJS, 2)
    v1, v2 = rng.sample(_VERBS, 2)
    name = rng.choice(NAMES)
    adv = rng.choice(_ADVS)
    city = rng.choice(CITIES)
    t = rng.randrange(12)
    if t == 0:
        return f"{name} {v1} {_a(a1)} {n1} near the {n2} and {v2} it {adv}."
    if t == 1:
        return f"The {a1} {n1} in {city} was {adv} {v1} by a {n2} from the {a2} {n3}."
    if t == 2:
        return f"{rng.choice(_CONNECT)}, the people of the {n1} {v1} {_a(a1)} {n2} for the {n3}."
    if t == 3:
        return f"There is hope that the next {n1} will be {a1} and {a2}."
    if t == 4:
        return f"Many {n1}s are {a1}, but this {n2} is {adv} {a2}."
    if t == 5:
        return f"In {rng.randint(1500, 2020)}, {_a(a1)} {n1} {v1} the {n2} of {city}."
    if t == 6:
        return f"It helps to know that {_a(n1)} can be {a1} when the {n2} is {a2}."
    if t == 7:
        return f"{name} said that the {n1} was too {a1} to be {v1} in one {n2}."
    if t == 8:
        return f"The first step was to find {_a(a1)} {n1}, and the second step was to {v2.removesuffix('ed')} the {n2}."
    if t == 9:
        return f"Most {n1}s in the {a1} {n2} {v1} the {n3} every {rng.choice(['week', 'month', 'year', 'season'])}."
    if t == 10:
        return f"Scientists {v1} that {_a(a1)} {n1} changes the {n2} of {_a(a2)} {n3}."
    return f"Hi, said {name}, there is {_a(a1)} {n1} by the {n2} over there."


def general_paragraph(rng: random.Random) -> str:
    sentence = _news_sentence if rng.random() < 0.4 else _general_sentence
    return " ".join(sentence(rng) for _ in range(rng.randint(3, 7)))


# --- plain documents outside the chat format ------------------------------------------------------------------------
# A real base model has seen greetings, sign-offs, bullet lists and "Next step" lines in letters, forum posts and
# notes, but its assistant replies do not use them by default. These documents give the tiny model the same
# starting point: the patterns the simulated users want are known tokens in known shapes (so a LoRA can route the
# assistant's style to them), while the chat replies above stay plain.

_GREETINGS = ["Hi there!", "Hello {name},", "Dear {name},", "Hi {name},", "Good morning,"]
_SIGN_OFFS = ["Hope this helps!", "Best regards,\n{name}", "Thanks,\n{name}", "Cheers,\n{name}", "See you soon,\n{name}"]
_NEXT_STEPS = ["Next step: reply here if anything is still unclear.", "Next step: book the room for {day}.",
               "Next step: send the draft to {name}.", "Next step: check the numbers again on {day}."]
_TITLES = ["Notes", "Meeting notes", "To do", "Summary", "Checklist", "Key points", "Reminders"]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in text.replace(". ", ".\n").split("\n") if s.strip()]


# Chat replies in other styles than the plain one: openers, closings and bullet points, but never the users' own
# "Hi there!", "Hope this helps!" or "Next step:" line. A pretrained model has seen many reply styles; what it
# lacks is the one these users want. Without such replies in chat form, the tiny model lost the request after any
# first line it had not seen in a chat reply (on topic 93 % plain, 68 % after a forced "Hi there!", 7 % after
# "Hi there!" and a bullet), and a LoRA teaching the users' style taught it to answer something else.
_CHAT_OPENERS = ["Hello!", "Sure.", "Good question.", "Happy to help.", "Thanks for asking.", "Of course."]
_CHAT_CLOSINGS = ["Let me know if you need more.", "Good luck!", "Glad to help.", "Feel free to ask again.",
                  "Have a nice day!"]


def styled_reply(rng: random.Random, reply: str) -> str:
    """`reply` with an opener line, a closing line and/or its sentences as bullet points (at least one of them)."""
    while True:
        opener, closing, bullets = rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5
        if opener or closing or bullets:
            break
    lines = [rng.choice(_CHAT_OPENERS)] if opener else []
    lines += ["- " + s for s in _sentences(reply)] if bullets else [reply]
    if closing:
        lines.append(rng.choice(_CHAT_CLOSINGS))
    return "\n".join(lines)


def plain_document(rng: random.Random) -> str:
    """A forum answer or a letter, a list of notes, or a question and its answer, as plain text.

    Each answers the question it starts with: content after a greeting or under a notes heading is about the
    question, so a model that learns to open with a greeting keeps answering what was asked (an earlier corpus with
    greetings before unrelated text taught the tiny model to lose the topic after "Hi there!").
    """
    kind = rng.random()
    name, day = rng.choice(NAMES), rng.choice(DAYS)
    turn = sample_conversation(rng, max_turns=1).turns[0]
    if kind < 0.3:  # a forum answer or a letter
        greeting = rng.choice(_GREETINGS).format(name=name)
        sign_off = rng.choice(_SIGN_OFFS).format(name=rng.choice(NAMES))
        return f"{turn.request}\n{greeting}\n{turn.reply}\n{sign_off}\n\n"
    if kind < 0.6:  # notes with bullet points
        lines = [f"{rng.choice(_TITLES)}: {turn.request}"] + ["- " + s for s in _sentences(turn.reply)]
        if rng.random() < 0.4:
            lines.append(rng.choice(_NEXT_STEPS).format(name=name, day=day))
        return "\n".join(lines) + "\n\n"
    return f"{turn.request}\n{turn.reply}\n\n"
