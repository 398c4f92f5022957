// The survey page's own words (survey.html, survey.js). Traditional Chinese
// first; survey.html carries the same words for a page without scripts.
// Someone may be looking over the reader's shoulder: the page says what it
// is (a few questions about an appointment) and nothing about what the
// appointment was for. The questions themselves come from the server in the
// language asked for (accept-language), as do its refusals.
export const WORDS = {
  "zh-TW": {
    title: "服務意見調查",
    skip: "跳到主要內容",
    languages: "語言",
    questions: "問題",
    intro:
      "感謝您撥空填答。只有幾個問題，約一兩分鐘，每一題都可以不答。您的回答不具名：保存時不含您的姓名或預約資料，且只以五人以上的合計數字呈現。",
    until: "此連結限用一次，有效至 {date}。",
    score1: "1 完全不",
    score2: "2 不太",
    score3: "3 普通",
    score4: "4 相當",
    score5: "5 非常",
    textHint: "請勿寫下姓名、服務單位或其他認得出您或別人的資料。最多 1,000 字。",
    submit: "送出回答",
    loading: "載入中…",
    working: "送出中…",
    thanksTitle: "感謝您的填答",
    thanks: "已收到您的回答。這個連結已經用過，您可以關閉這個頁面。",
    answerOne: "請至少回答一題再送出。",
    fixBelow: "有些回答需要修改，請看各題下方的說明。",
    badScore: "請在 1 到 5 之中選一個。",
    badText: "最多 1,000 字，請刪減一些。",
    gone: "這一題已經不再詢問，送出時會略過。",
    badAnswer: "這一題的回答無法收下，請修改。",
    notFound:
      "這個連結已經填答過，或不是有效的連結。如果您已經送出回答，就不需要再填，謝謝您。",
    noLink: "請從通知信裡的連結開啟這個頁面。",
    failed: "無法完成，請稍後再試。",
  },
  en: {
    title: "Feedback",
    skip: "Skip to the main content",
    languages: "Language",
    questions: "Questions",
    intro:
      "Thank you for taking the time. A few questions, a minute or two; you may leave any of them out. Your answers are anonymous: they are kept without your name or your appointment, and read only in totals of five people or more.",
    until: "This link works once, until {date}.",
    score1: "1 Not at all",
    score2: "2 A little",
    score3: "3 Moderately",
    score4: "4 Quite",
    score5: "5 Very much",
    textHint:
      "Please do not write names, your office or anything else by which you or anyone else could be recognised. At most 1,000 characters.",
    submit: "Send my answers",
    loading: "Loading…",
    working: "Sending…",
    thanksTitle: "Thank you!",
    thanks: "Your answers have been received. This link is now used up: you may close this page.",
    answerOne: "Please answer at least one question before sending.",
    fixBelow: "Some answers need changing: see the words under each question.",
    badScore: "Please choose one of 1 to 5.",
    badText: "At most 1,000 characters: please shorten it.",
    gone: "This question is no longer asked: it will be left out when you send.",
    badAnswer: "This answer cannot be taken: please change it.",
    notFound:
      "This link has already been answered, or it is not a link of ours. If you have sent your answers, there is nothing more to do: thank you.",
    noLink: "Please open this page with the link in the message you received.",
    failed: "This could not be done: please try again later.",
  },
};
