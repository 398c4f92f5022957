// The booking page: sign in, say what you need, pick a free time, hold it,
// confirm it; see your bookings, move or cancel one. Every call goes to the
// matcher through the edge with the generated client (clients.js) over
// Connect; a refusal shows the server's own explanation, in the language
// this page asks for (accept-language).
import {
  Code,
  ConnectError,
  createClient,
  createConnectTransport,
  matcher,
  rpc,
  timestampDate,
  timestampFromDate,
} from "./clients.js";
import { WORDS } from "./words.js";

const ZONE = "Asia/Taipei"; // the programme's time zone, whatever the browser's
const TAIPEI_OFFSET = "+08:00"; // Taiwan keeps no daylight saving time
const LONGEST_SEARCH_DAYS = 62; // FindSlots' longest window
const SLOTS_SHOWN = 12;
const CASES_PER_PAGE = 10;
const TOKEN_KEY = "eap-token"; // sessionStorage: gone when the tab closes

const language = pickLanguage();
const words = WORDS[language];
const state = {
  token: sessionStorage.getItem(TOKEN_KEY) ?? "",
  held: null, // the hold being confirmed: { booking, slot, replaces }
  rescheduling: null, // the booking being moved, while its new times are shown
  nextCases: "",
};

const transport = createConnectTransport({
  baseUrl: location.origin,
  interceptors: [
    (next) => (request) => {
      request.header.set("authorization", `Bearer ${state.token}`);
      request.header.set("accept-language", language);
      return next(request);
    },
  ],
});
const client = createClient(matcher.MatcherService, transport);

const $ = (id) => document.getElementById(id);

// --- words ------------------------------------------------------------------

function pickLanguage() {
  const asked = new URLSearchParams(location.search).get("lang") ?? localStorage.getItem("lang");
  const chosen = asked === "en" ? "en" : "zh-TW";
  localStorage.setItem("lang", chosen);
  return chosen;
}

function say(key, values = {}) {
  return words[key].replace(/\{(\w+)\}/g, (_, name) => values[name] ?? "");
}

function translatePage() {
  document.documentElement.lang = language === "en" ? "en" : "zh-Hant-TW";
  for (const element of document.querySelectorAll("[data-word]")) {
    element.textContent = say(element.dataset.word);
  }
  for (const element of document.querySelectorAll("[data-word-label]")) {
    element.setAttribute("aria-label", say(element.dataset.wordLabel));
  }
}

const dateTime = new Intl.DateTimeFormat(language, {
  timeZone: ZONE,
  month: "long",
  day: "numeric",
  weekday: "short",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});
const clockTime = new Intl.DateTimeFormat(language, {
  timeZone: ZONE,
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});

function when(start, minutes) {
  const begin = timestampDate(start);
  const end = new Date(begin.getTime() + minutes * 60_000);
  return `${dateTime.format(begin)}–${clockTime.format(end)}`;
}

function modalityWord(modality) {
  return say(matcher.Modality[modality]);
}

// Where a slot or a booking takes place: its location, or a link to the
// counselor's video room (the registry takes https links only).
function placeOf(item) {
  if (item.videoLink) {
    const link = document.createElement("a");
    link.href = item.videoLink;
    link.textContent = say("videoRoom");
    link.rel = "noopener";
    return link;
  }
  return item.location ? document.createTextNode(say("at", { where: item.location })) : null;
}

function describe(paragraph, text, item) {
  paragraph.textContent = text;
  const place = placeOf(item);
  if (place) paragraph.append(" · ", place);
}

// --- telling the person -----------------------------------------------------

function notice(text) {
  $("problem").hidden = true;
  $("notice").textContent = text;
}

// The server's explanation for the reader (google.rpc.LocalizedMessage);
// Envoy's Connect bridge names a detail's type with its type URL, so the
// lookup takes the name after the last "/".
const details = {
  getMessage(typeName) {
    const name = typeName.slice(typeName.lastIndexOf("/") + 1);
    return name === rpc.LocalizedMessageSchema.typeName ? rpc.LocalizedMessageSchema : undefined;
  },
};

function explain(error) {
  const refusal = ConnectError.from(error);
  const [localized] = refusal.findDetails(details);
  return localized?.message || say("failed");
}

function problem(error) {
  console.error(error);
  const box = $("problem");
  $("notice").textContent = "";
  box.textContent = explain(error);
  box.hidden = false;
  box.focus();
}

// Runs one user action: a notice while it works, the refusal if it fails,
// and the button it came from disabled meanwhile (no double bookings by
// impatience).
async function act(button, work) {
  if (button) button.disabled = true;
  $("notice").textContent = say("working");
  try {
    await work();
    if ($("notice").textContent === say("working")) notice("");
  } catch (error) {
    if (ConnectError.from(error).code === Code.Unauthenticated) signOut(); // expired: sign in again
    problem(error);
  } finally {
    if (button) button.disabled = false;
  }
}

function show(id, visible = true) {
  $(id).hidden = !visible;
}

function focusOn(id) {
  $(id).focus();
}

// --- signing in -------------------------------------------------------------

function signedIn() {
  const claims = claimsOf(state.token);
  show("sign-in", !claims);
  show("account", !!claims);
  show("need", !!claims);
  show("bookings", !!claims);
  if (claims) {
    $("who").textContent = claims.sub;
    act(null, () => loadBookings());
  } else {
    show("slots", false);
    show("held", false);
  }
}

// Shows who is signed in; the services check the token itself.
function claimsOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(new TextDecoder().decode(base64Bytes(payload)));
    return typeof claims.sub === "string" ? claims : null;
  } catch {
    return null;
  }
}

function base64Bytes(text) {
  return Uint8Array.from(atob(text.padEnd(Math.ceil(text.length / 4) * 4, "=")), (c) =>
    c.charCodeAt(0),
  );
}

function signOut() {
  state.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  signedIn();
}

function useToken(token) {
  state.token = token.trim();
  if (claimsOf(state.token)) {
    sessionStorage.setItem(TOKEN_KEY, state.token);
    notice("");
  } else {
    state.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    problem(new ConnectError(say("badToken")));
  }
  signedIn();
}

// --- what the person needs --------------------------------------------------

function checked(name) {
  return [...document.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => i.value);
}

// The times that suit, as ranges on each chosen weekday of the coming
// weeks, in Taipei time.
function availability(weeks, weekdays, parts) {
  const ranges = [];
  const today = new Date(`${taipeiDate(new Date())}T00:00:00${TAIPEI_OFFSET}`);
  for (let day = 0; day < weeks * 7; day++) {
    const local = taipeiDate(new Date(today.getTime() + day * 86_400_000));
    const weekday = String(((new Date(`${local}T12:00:00Z`).getUTCDay() + 6) % 7) + 1); // Monday 1
    if (!weekdays.includes(weekday)) continue;
    for (const part of parts) {
      const [from, to] = part.split("-");
      ranges.push({
        start: timestampFromDate(new Date(`${local}T${from}:00${TAIPEI_OFFSET}`)),
        end: timestampFromDate(new Date(`${local}T${to}:00${TAIPEI_OFFSET}`)),
      });
    }
  }
  return ranges;
}

function taipeiDate(moment) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: ZONE }).format(moment); // YYYY-MM-DD
}

async function submitNeed(event) {
  event.preventDefault();
  const form = event.target;
  await act(form.querySelector("button"), async () => {
    const weeks = Number(form.weeks.value);
    const { case: created } = await client.submitCase({
      requestId: crypto.randomUUID(),
      case: {
        employeeId: claimsOf(state.token).sub, // one's own: the server checks
        category: matcher.Category[form.category.value],
        kind: matcher.CaseKind.GENERAL,
        sessionsWanted: Number(form.sessions.value),
        minutes: Number(form.minutes.value),
        modalities: checked("modality").map((m) => matcher.Modality[m]),
        availability: availability(weeks, checked("weekday"), checked("part")),
        timeOff: matcher.TimeOff.OFFICIAL_LEAVE,
      },
    });
    state.rescheduling = null;
    await findSlots(created.caseId, weeks);
  });
}

// --- free times -------------------------------------------------------------

async function findSlots(caseId, weeks, replaces = null) {
  const now = new Date();
  const days = Math.min(weeks * 7, LONGEST_SEARCH_DAYS);
  const { slots, noneBecause } = await client.findSlots({
    caseId,
    windowStart: timestampFromDate(now),
    windowEnd: timestampFromDate(new Date(now.getTime() + days * 86_400_000)),
    maxSlots: SLOTS_SHOWN,
    replacesBookingId: replaces?.bookingId ?? "",
  });
  const list = $("slot-list");
  list.replaceChildren(
    ...slots.map((slot, n) => {
      const item = document.createElement("li");
      const text = document.createElement("p");
      text.id = `slot-${n}`;
      describe(text, `${when(slot.start, slot.minutes)} · ${slot.counselorName} · ${modalityWord(slot.modality)}`, slot);
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = say(replaces ? "moveHere" : "hold");
      button.setAttribute("aria-describedby", text.id); // which time, for a screen reader
      button.addEventListener("click", () =>
        act(button, () => hold(caseId, slot, replaces)),
      );
      item.append(text, button);
      return item;
    }),
  );
  $("slots-for").textContent = replaces
    ? say("slotsFor", { when: when(replaces.start, replaces.minutes) })
    : "";
  show("slots");
  show("held", false);
  // Nothing to offer: the server's reasons, in the reader's words.
  const why = noneBecause.map((reason) => reason.explanation).filter(Boolean);
  notice(slots.length ? "" : why.length ? why.join(" ") : say("noSlots"));
  focusOn("slots-title");
}

async function hold(caseId, slot, replaces) {
  const { booking } = await client.holdSlot({
    caseId,
    counselorId: slot.counselorId,
    start: slot.start,
    replacesBookingId: replaces?.bookingId ?? "",
  });
  state.held = { booking, slot, replaces };
  const values = {
    when: when(booking.start, booking.minutes),
    counselor: slot.counselorName,
    modality: modalityWord(booking.modality),
    until: clockTime.format(timestampDate(booking.holdExpiresAt)),
    from: replaces ? when(replaces.start, replaces.minutes) : "",
  };
  $("held-text").textContent = say(replaces ? "rescheduleText" : "heldText", values);
  $("confirm").textContent = say(replaces ? "confirmMove" : "confirm");
  show("slots", false);
  show("held");
  notice("");
  focusOn("held-title");
}

async function confirmHeld() {
  const { booking, slot, replaces } = state.held;
  if (replaces) {
    const moved = await client.rescheduleBooking({
      bookingId: replaces.bookingId,
      newBookingId: booking.bookingId,
    });
    notice(say("moved", { when: when(moved.booking.start, moved.booking.minutes) }));
  } else {
    const confirmed = await client.confirmBooking({ bookingId: booking.bookingId });
    notice(
      say("booked", {
        when: when(confirmed.booking.start, confirmed.booking.minutes),
        counselor: slot.counselorName,
        modality: modalityWord(confirmed.booking.modality),
      }),
    );
  }
  state.held = null;
  show("held", false);
  await loadBookings();
}

async function giveUp() {
  await client.cancelBooking({ bookingId: state.held.booking.bookingId });
  state.held = null;
  show("held", false);
  notice(say("released"));
}

// --- my bookings ------------------------------------------------------------

async function loadBookings(more = false) {
  const page = await client.listCases({
    pageSize: CASES_PER_PAGE,
    pageToken: more ? state.nextCases : "",
  });
  state.nextCases = page.nextPageToken;
  const list = $("booking-list");
  const items = page.cases.flatMap(({ bookings }) =>
    bookings
      .filter((b) => b.state !== matcher.BookingState.RELEASED)
      .map((booking) => bookingItem(booking)),
  );
  if (more) list.append(...items);
  else list.replaceChildren(...items);
  show("no-bookings", list.children.length === 0);
  show("more", !!page.nextPageToken);
}

function bookingItem(booking) {
  const item = document.createElement("li");
  const text = document.createElement("p");
  text.id = `booking-${booking.bookingId}`;
  const status = say(matcher.BookingState[booking.state]);
  describe(text, `${when(booking.start, booking.minutes)} · ${modalityWord(booking.modality)} · ${status}`, booking);
  item.append(text);
  if (booking.state === matcher.BookingState.BOOKED) {
    const actions = document.createElement("p");
    actions.className = "actions";
    const move = document.createElement("button");
    move.type = "button";
    move.textContent = say("reschedule");
    move.setAttribute("aria-describedby", text.id);
    move.addEventListener("click", () =>
      act(move, () => {
        state.rescheduling = booking;
        return findSlots(booking.caseId, 4, booking);
      }),
    );
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "quiet";
    cancel.textContent = say("cancel");
    cancel.setAttribute("aria-describedby", text.id);
    cancel.addEventListener("click", () => askToCancel(booking));
    actions.append(move, cancel);
    item.append(actions);
  }
  return item;
}

function askToCancel(booking) {
  const dialog = $("cancel-dialog");
  $("cancel-text").textContent = when(booking.start, booking.minutes);
  $("cancel-reason").value = "";
  dialog.onclose = () => {
    if (dialog.returnValue !== "cancel") return;
    act(null, async () => {
      await client.cancelBooking({
        bookingId: booking.bookingId,
        reason: $("cancel-reason").value,
      });
      notice(say("cancelled", { when: when(booking.start, booking.minutes) }));
      await loadBookings();
    });
  };
  dialog.showModal();
}

// --- wiring -----------------------------------------------------------------

function start() {
  translatePage();
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("token")) {
    // A development link (make demo prints one): the token leaves the
    // address bar and the history at once.
    history.replaceState(null, "", location.pathname + location.search);
    useToken(fragment.get("token"));
  } else {
    signedIn();
  }
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useToken($("token").value);
  });
  $("sign-out").addEventListener("click", () => {
    signOut();
    notice(say("signedOut"));
  });
  $("need-form").addEventListener("submit", submitNeed);
  $("confirm").addEventListener("click", (event) => act(event.target, confirmHeld));
  $("give-up").addEventListener("click", (event) => act(event.target, giveUp));
  $("more").addEventListener("click", (event) => act(event.target, () => loadBookings(true)));
}

start();
