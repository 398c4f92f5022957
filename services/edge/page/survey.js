// The survey page: the few questions a one-time link opens after an
// attended appointment, answered without signing in. The link's token
// (survey.html#token=<tenant>.<secret>) is the only credential: it goes in
// the body of GetSurvey and SubmitSurvey, never in a header, and this page
// sends no authorization at all (policy.LINK_METHODS). Every call goes to
// the matcher through the edge with the generated client (clients.js) over
// Connect; a refusal shows the server's own explanation, in the language
// this page asks for (accept-language).
import {
  Code,
  ConnectError,
  createClient,
  createConnectTransport,
  matcher,
  rpc,
  survey,
  timestampDate,
} from "./clients.js";
import { WORDS } from "./survey-words.js";

const ZONE = "Asia/Taipei"; // the programme's time zone, whatever the browser's
const SCORES = [1, 2, 3, 4, 5]; // SurveyAnswer.score
// sessionStorage: a reload (a phone that dropped the tab meanwhile, or the
// language links) finds the token again; gone when the tab closes, and at
// once when the link is answered or refused for good.
const TOKEN_KEY = "eap-survey-token";

const language = pickLanguage();
const words = WORDS[language];
const state = {
  token: "",
  questions: [], // as GetSurvey gave them
  skipped: new Set(), // question ids the server no longer asks (a refusal said so)
  sent: [], // the last answers sent, each with its question's place: { n, answer }
};

const transport = createConnectTransport({
  baseUrl: location.origin,
  interceptors: [
    (next) => (request) => {
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

const day = new Intl.DateTimeFormat(language, {
  timeZone: ZONE,
  month: "long",
  day: "numeric",
  weekday: "short",
});

// The link closes at midnight starting a Monday: its last day is the Sunday.
function lastDay(expiresAt) {
  return day.format(new Date(timestampDate(expiresAt).getTime() - 1));
}

// --- telling the person -----------------------------------------------------

function notice(text) {
  $("problem").hidden = true;
  $("notice").textContent = text;
}

// The refusal's details: the server's explanation for the reader
// (google.rpc.LocalizedMessage) and the fields it names (BadRequest).
// Envoy's Connect bridge names a detail's type with its type URL, so the
// lookup takes the name after the last "/".
const details = {
  getMessage(typeName) {
    const name = typeName.slice(typeName.lastIndexOf("/") + 1);
    return [rpc.LocalizedMessageSchema, rpc.BadRequestSchema].find((s) => s.typeName === name);
  },
};

function detailsOf(error, schema) {
  return ConnectError.from(error)
    .findDetails(details)
    .filter((detail) => detail.$typeName === schema.typeName);
}

function explain(error) {
  const [localized] = detailsOf(error, rpc.LocalizedMessageSchema);
  return localized?.message || say("failed");
}

function problem(text) {
  const box = $("problem");
  $("notice").textContent = "";
  box.textContent = text;
  box.hidden = false;
  box.focus();
}

// The link cannot be answered (any more): the reason, and nothing to fill in.
function closed(text) {
  forgetToken();
  $("survey").hidden = true;
  problem(text);
}

// Runs one step: a notice while it works, the refusal if it fails, and
// the button it came from disabled meanwhile (one submission, however
// impatient the finger).
async function act(button, working, work) {
  if (button) button.disabled = true;
  $("notice").textContent = say(working);
  try {
    await work();
    if ($("notice").textContent === say(working)) notice("");
  } catch (error) {
    console.error(error);
    refused(error);
  } finally {
    if (button) button.disabled = false;
  }
}

function refused(error) {
  const refusal = ConnectError.from(error);
  if (refusal.code === Code.NotFound) {
    // A used link leaves nothing behind on the server, so it is as unknown
    // as a mistyped one: both are told here, in the page's own words.
    closed(say("notFound"));
  } else if (refusal.code === Code.FailedPrecondition) {
    closed(explain(refusal)); // closed (SURVEY_EXPIRED), in the server's words
  } else if (refusal.code === Code.InvalidArgument) {
    pointAt(refusal);
  } else {
    problem(explain(refusal)); // the link is still good: try again later
  }
}

// --- the token --------------------------------------------------------------

// The token from the link, out of the address bar and the history at once
// (a browser never sends the fragment: only the calls' bodies carry it).
function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("token")) {
    history.replaceState(null, "", location.pathname + location.search);
    state.token = fragment.get("token").trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
  } else {
    state.token = sessionStorage.getItem(TOKEN_KEY) ?? "";
  }
  return state.token;
}

function forgetToken() {
  state.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
}

// --- the questions ----------------------------------------------------------

async function load() {
  const opened = await client.getSurvey({ token: state.token });
  state.questions = opened.questions;
  state.skipped.clear();
  $("questions").replaceChildren(...opened.questions.map(questionBlock));
  const until = opened.expiresAt ? lastDay(opened.expiresAt) : "";
  $("until").textContent = until ? say("until", { date: until }) : "";
  $("survey").hidden = false;
}

function questionBlock(question, n) {
  return question.kind === survey.SurveyQuestionKind.TEXT
    ? textQuestion(question, n)
    : scoreQuestion(question, n);
}

// Five choices in one group, the question as its legend: Tab reaches the
// group, the arrow keys choose.
function scoreQuestion(question, n) {
  const group = document.createElement("fieldset");
  group.className = "question scale";
  group.dataset.question = question.questionId;
  const legend = document.createElement("legend");
  legend.textContent = question.prompt;
  group.append(legend, fieldProblem(n));
  group.setAttribute("aria-describedby", `problem-${n}`);
  for (const score of SCORES) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "radio";
    input.name = `q${n}`;
    input.value = String(score);
    const text = document.createElement("span");
    text.textContent = say(`score${score}`);
    label.append(input, text);
    group.append(label);
  }
  return group;
}

function textQuestion(question, n) {
  const block = document.createElement("div");
  block.className = "question";
  block.dataset.question = question.questionId;
  const label = document.createElement("label");
  label.htmlFor = `answer-${n}`;
  label.textContent = question.prompt;
  const hint = document.createElement("p");
  hint.id = `hint-${n}`;
  hint.className = "hint";
  hint.textContent = say("textHint");
  const area = document.createElement("textarea");
  area.id = `answer-${n}`;
  area.name = `q${n}`;
  area.rows = 5;
  area.maxLength = 1000; // SurveyAnswer.text
  area.autocomplete = "off";
  area.setAttribute("aria-describedby", `hint-${n} problem-${n}`);
  block.append(label, hint, fieldProblem(n), area);
  return block;
}

function fieldProblem(n) {
  const line = document.createElement("p");
  line.id = `problem-${n}`;
  line.className = "field-problem";
  line.hidden = true;
  return line;
}

// --- answering --------------------------------------------------------------

// The answers given, in the questions' order, each with the question's
// place on the page (a refusal names an answer by its index).
function answersGiven() {
  const form = $("survey-form");
  const given = [];
  state.questions.forEach(({ questionId, kind }, n) => {
    if (state.skipped.has(questionId)) return;
    if (kind === survey.SurveyQuestionKind.TEXT) {
      const text = form.elements[`q${n}`].value;
      if (text.trim()) given.push({ n, answer: { questionId, text } });
    } else {
      const chosen = form.querySelector(`input[name="q${n}"]:checked`);
      if (chosen) given.push({ n, answer: { questionId, score: Number(chosen.value) } });
    }
  });
  return given;
}

async function submit(event) {
  event.preventDefault();
  clearProblems();
  const given = answersGiven();
  if (!given.length) {
    problem(say("answerOne"));
    return;
  }
  state.sent = given;
  await act(event.target.querySelector("button[type=submit]"), "working", async () => {
    await client.submitSurvey({ token: state.token, answers: given.map((g) => g.answer) });
    forgetToken();
    $("survey").hidden = true;
    $("thanks").hidden = false;
    notice("");
    $("thanks-title").focus();
  });
}

// INVALID_ARGUMENT: each field it names, next to its question, in the
// page's words (the server describes fields for programmers).
function pointAt(refusal) {
  const [bad] = detailsOf(refusal, rpc.BadRequestSchema);
  const violations = bad?.fieldViolations ?? [];
  let pointed = 0;
  for (const violation of violations) {
    const found = /^answers\[(\d+)\]\.(\w+)$/.exec(violation.field);
    const sent = found && state.sent[Number(found[1])];
    if (!sent) continue;
    const question = state.questions[sent.n];
    if (found[2] === "question_id") {
      // Asked no more (the survey's questions changed meanwhile): left out
      // of the next submission.
      state.skipped.add(question.questionId);
      markProblem(sent.n, say("gone"), true);
    } else {
      const words = violation.localizedMessage?.message || say(ownWords(question, found[2]));
      markProblem(sent.n, words, false);
    }
    pointed++;
  }
  const unanswered = violations.some((violation) => violation.field === "answers");
  problem(pointed ? say("fixBelow") : unanswered ? say("answerOne") : explain(refusal));
}

// The page's words for what is wrong with the answer to `question`.
function ownWords(question, field) {
  const text = question.kind === survey.SurveyQuestionKind.TEXT;
  if (field === "score" && !text) return "badScore";
  if (field === "text" && text) return "badText";
  return "badAnswer";
}

function markProblem(n, text, skipped) {
  const line = $(`problem-${n}`);
  line.textContent = text;
  line.hidden = false;
  const block = line.closest(".question");
  for (const control of block.querySelectorAll("input, textarea")) {
    control.setAttribute("aria-invalid", "true");
    control.disabled = skipped;
  }
}

function clearProblems() {
  for (const line of document.querySelectorAll(".field-problem")) {
    const block = line.closest(".question");
    if (state.skipped.has(block.dataset.question)) continue; // still said: left out
    line.hidden = true;
    line.textContent = "";
    for (const control of block.querySelectorAll("[aria-invalid]")) {
      control.removeAttribute("aria-invalid");
    }
  }
}

// --- wiring -----------------------------------------------------------------

function open() {
  $("thanks").hidden = true;
  if (!takeToken()) {
    $("survey").hidden = true;
    problem(say("noLink"));
    return;
  }
  act(null, "loading", load);
}

function start() {
  translatePage();
  $("survey-form").addEventListener("submit", submit);
  // Another link opened in this tab: only the fragment changes.
  window.addEventListener("hashchange", () => {
    if (new URLSearchParams(location.hash.slice(1)).has("token")) open();
  });
  open();
}

start();
