/**
 * Word lists and names the generator draws from. Several scripts on purpose (Latin with
 * diacritics, Cyrillic, CJK, Arabic, Devanagari, Hangul, emoji with ZWJ sequences), so that
 * every stage that touches text is exercised with multi-byte UTF-8.
 */

/** A language of the generated text: its words and whether it writes spaces between them. */
export interface Language {
  readonly code: string;
  readonly spaced: boolean;
  readonly words: readonly string[];
  readonly stop: readonly string[];
  /** [romanised, native] given and family names; handles use the romanised form. */
  readonly given: readonly (readonly [string, string])[];
  readonly family: readonly (readonly [string, string])[];
  /** Family name first, as in Chinese, Japanese and Korean. */
  readonly familyFirst: boolean;
}

/** Space-separated words. */
function w(text: string): readonly string[] {
  return text.split(' ');
}

/** `romanised:native` pairs, space-separated. */
function names(text: string): readonly (readonly [string, string])[] {
  return text.split(' ').map((pair) => {
    const [roman = '', native = ''] = pair.split(':');
    return [roman, native] as const;
  });
}

const en: Language = {
  code: 'en',
  spaced: true,
  familyFirst: false,
  words: w(
    'the meeting deploy review please thanks tomorrow release ticket customer update draft looks good ' +
      'can you check budget quarter lunch call sync agenda notes fixed bug merge branch ship today question ' +
      'about invoice roadmap design feedback sure great sorry late running minutes link shared doc slides ' +
      'approved pending ok done will send after standup blocked on staging prod rollback',
  ),
  stop: ['.', '!', '?', '', '…'],
  given: names(
    'alice:Alice bob:Bob carol:Carol dave:Dave erin:Erin frank:Frank grace:Grace heidi:Heidi ivan:Ivan judy:Judy mallory:Mallory oscar:Oscar',
  ),
  family: names(
    "smith:Smith jones:Jones taylor:Taylor brown:Brown wilson:Wilson evans:Evans oconnor:O'Connor nguyen:Nguyen",
  ),
};

const de: Language = {
  code: 'de',
  spaced: true,
  familyFirst: false,
  words: w(
    'Besprechung morgen bitte danke Rechnung Kunde prüfen fertig Straße Größe schön Übersicht Änderung heute Termin Entwurf gut ja nein später Freigabe Fehler behoben',
  ),
  stop: ['.', '!', '?', ''],
  given: names('juergen:Jürgen anna:Anna lukas:Lukas sophie:Sophie matthias:Matthias'),
  family: names('mueller:Müller schmidt:Schmidt schroeder:Schröder weiss:Weiß koenig:König'),
};

const fr: Language = {
  code: 'fr',
  spaced: true,
  familyFirst: false,
  words: w(
    "réunion demain merci s'il vous plaît facture client vérifier déjà été très bien à côté prêt projet équipe ça marche où",
  ),
  stop: ['.', ' !', ' ?', ''],
  given: names('amelie:Amélie francois:François helene:Hélène jerome:Jérôme'),
  family: names('lefevre:Lefèvre dupont:Dupont garcon:Garçon moreau:Moreau'),
};

const es: Language = {
  code: 'es',
  spaced: true,
  familyFirst: false,
  words: w(
    'reunión mañana gracias por favor factura cliente revisar listo año equipo está bien más tarde qué tal niño acción',
  ),
  stop: ['.', '!', ''],
  given: names('jose:José maria:María javier:Javier lucia:Lucía'),
  family: names('garcia:García martinez:Martínez pena:Peña lopez:López'),
};

const ru: Language = {
  code: 'ru',
  spaced: true,
  familyFirst: false,
  words: w(
    'встреча завтра спасибо пожалуйста проверь счёт клиент готово сегодня проект команда позже да нет хорошо релиз ошибка',
  ),
  stop: ['.', '!', '?', ''],
  given: names('dmitry:Дмитрий olga:Ольга sergey:Сергей natalia:Наталья'),
  family: names('ivanov:Иванов petrova:Петрова smirnov:Смирнов volkova:Волкова'),
};

const zh: Language = {
  code: 'zh',
  spaced: false,
  familyFirst: true,
  words: w(
    '我们 明天 开会 请 检查 一下 这个 文件 谢谢 已经 完成 客户 发票 问题 没有 可以 下午 讨论 项目 进度 上线 回滚',
  ),
  stop: ['。', '！', '？', '', '，好的'],
  given: names('wei:伟 fang:芳 jing:静 lei:磊 xiuying:秀英'),
  family: names('wang:王 li:李 zhang:张 liu:刘 chen:陈'),
};

const ja: Language = {
  code: 'ja',
  spaced: false,
  familyFirst: true,
  words: w(
    '明日 会議 です お願いします 確認 してください ありがとう ございます 資料 共有 しました すみません 遅れます 了解 プロジェクト 進捗 レビュー テスト 完了 本番',
  ),
  stop: ['。', '！', '', 'ね。'],
  given: names('hanako:花子 taro:太郎 yuki:ゆき kenji:健二'),
  family: names('sato:佐藤 suzuki:鈴木 takahashi:高橋 tanaka:田中'),
};

const ar: Language = {
  code: 'ar',
  spaced: true,
  familyFirst: false,
  words: w(
    'مرحبا الاجتماع غدا شكرا من فضلك الفاتورة العميل تم الانتهاء المشروع الفريق سوف أرسل الملف اليوم مساء الخير نعم لا',
  ),
  stop: ['.', '؟', '!', ''],
  given: names('mohammed:محمد fatima:فاطمة omar:عمر layla:ليلى'),
  family: names('ali:علي hassan:حسن khalil:خليل mansour:منصور'),
};

const hi: Language = {
  code: 'hi',
  spaced: true,
  familyFirst: false,
  words: w('नमस्ते कल बैठक धन्यवाद कृपया जाँच ग्राहक परियोजना टीम आज ठीक है'),
  stop: ['।', '!', ''],
  given: names('priya:प्रिया arjun:अर्जुन ananya:अनन्या'),
  family: names('sharma:शर्मा patel:पटेल gupta:गुप्ता'),
};

const ko: Language = {
  code: 'ko',
  spaced: true,
  familyFirst: true,
  words: w('안녕하세요 내일 회의 감사합니다 확인 부탁드립니다 프로젝트 고객 오늘 완료 배포'),
  stop: ['.', '!', '', '요.'],
  given: names('minjun:민준 seoyeon:서연 jiho:지호'),
  family: names('kim:김 lee:이 park:박'),
};

/** Every language, keyed by its code. */
export const LANGUAGES: Readonly<Record<string, Language>> = {
  en,
  de,
  fr,
  es,
  ru,
  zh,
  ja,
  ar,
  hi,
  ko,
};

/** Locales users get, weighted by repetition (English-heavy, as most enterprise tenants are). */
export const LOCALES: readonly string[] = [
  'en-US',
  'en-US',
  'en-US',
  'en-US',
  'en-GB',
  'en-GB',
  'de-DE',
  'de-DE',
  'fr-FR',
  'es-ES',
  'es-ES',
  'ru-RU',
  'zh-CN',
  'zh-CN',
  'zh-TW',
  'ja-JP',
  'ja-JP',
  'ar-SA',
  'ar-EG',
  'hi-IN',
  'ko-KR',
];

/** The language of a locale (`ja-JP` → Japanese); English when unknown. */
export function languageOf(locale: string): Language {
  return LANGUAGES[locale.slice(0, 2)] ?? en;
}

/** Emoji, including ZWJ sequences, flags and skin-tone modifiers (several code points each). */
export const EMOJI: readonly string[] = [
  '👍',
  '🎉',
  '😂',
  '🙏',
  '🔥',
  '✅',
  '❤️',
  '🚀',
  '👀',
  '🤔',
  '😅',
  '👨‍👩‍👧‍👦',
  '🇯🇵',
  '🏳️‍🌈',
  '👋🏽',
  '🧑🏿‍💻',
];

/**
 * Bodies that stress COPY text escaping and NULL handling: tabs, newlines, carriage returns,
 * backslashes, the literal two characters `\N` (COPY's NULL marker), `\.` (the old
 * end-of-data marker), and the word NULL. Each must come back byte for byte.
 */
export const TRICKY_BODIES: readonly string[] = [
  'path: C:\\Users\\demo\\report.txt',
  'line one\nline two\nline three',
  'col1\tcol2\tcol3',
  '\\N',
  '\\.',
  'trailing backslash \\',
  'windows\r\nline endings\r\n',
  '```\nfn main() {\n\tprintln!("hi\\n");\n}\n```',
  'NULL',
  '\t leading tab and trailing newline\n',
  'regex: ^\\d{3}-\\d{4}$ and \\\\server\\share',
  'mixed עברית and English and العربية in one line',
  'e\u0301 (combining accent) vs é',
];

/** Attachment kinds: extension, MIME type, and name stems in several scripts. */
export const ATTACHMENT_KINDS: readonly (readonly [string, string])[] = [
  ['pdf', 'application/pdf'],
  ['png', 'image/png'],
  ['jpg', 'image/jpeg'],
  ['docx', 'application/vnd.openxmlformats-officedocument.wordprocessingml.document'],
  ['xlsx', 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet'],
  ['zip', 'application/zip'],
  ['txt', 'text/plain'],
  ['mp4', 'video/mp4'],
];

/**
 * Kinds of the files a chat service keeps in its object store: [extension, content type,
 * compressible]. Photos, scans, voice notes and videos are already compressed; logs, CSVs
 * and plain text are not, so the mix exercises both.
 */
export const FILE_KINDS: readonly (readonly [string, string, boolean])[] = [
  ['jpg', 'image/jpeg', false],
  ['png', 'image/png', false],
  ['pdf', 'application/pdf', false],
  ['ogg', 'audio/ogg', false],
  ['mp4', 'video/mp4', false],
  ['zip', 'application/zip', false],
  ['txt', 'text/plain', true],
  ['csv', 'text/csv', true],
  ['log', 'text/plain', true],
];

export const ATTACHMENT_STEMS: readonly string[] = [
  'report',
  'screenshot',
  'invoice',
  'slides',
  'notes',
  'design-v2',
  '写真',
  '資料_最終版',
  'تقرير',
  'Übersicht',
  'résumé',
  'scan 2025',
];

/** Tenant name stems (some with non-ASCII); slugs are derived and made unique by id. */
export const TENANT_NAMES: readonly (readonly [string, string])[] = [
  ['acme', 'Acme Corporation'],
  ['globex', 'Globex GmbH'],
  ['initech', 'Initech'],
  ['umbrella', 'Umbrella Health'],
  ['sakura', '株式会社さくら'],
  ['hooli', 'Hooli'],
  ['soylent', 'Soylent Foods'],
  ['zhongxin', '中信科技有限公司'],
  ['almanar', 'شركة المنار'],
  ['societe', 'Société Générale de Démo'],
  ['stark', 'Stark Industries'],
  ['wayne', 'Wayne Enterprises'],
  ['tyrell', 'Tyrell Corp'],
  ['oscorp', 'Oscorp'],
  ['cyberdyne', 'Cyberdyne Systems'],
  ['vandelay', 'Vandelay Industries'],
];

/** Group and channel title words. */
export const TITLE_WORDS: readonly string[] = [
  'general',
  'random',
  'engineering',
  'sales',
  'support',
  'incidents',
  'design',
  'マーケティング',
  '产品',
  'الدعم',
  'équipe',
  'Ops 🚀',
  'q3-planning',
  'watercooler',
];
