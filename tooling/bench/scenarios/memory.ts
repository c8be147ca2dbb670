import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'

import type { BenchContext, Row, Scenario } from '../context.ts'
import { trpcCall } from '../deployment.ts'
import { formatNumber, formatSigned, formatSummary, percentile, seededRandom, summarize } from '../stats.ts'
import { replyTurn, TIMED_TURNS_PER_USER, withSetup, type Account, type Setup } from './reply.ts'

/** What every turn says: a few of its words and CJK bigrams (dinner, cook, sister, weekend, 下周, 上海) are in many memories. */
const MESSAGE = 'Could you suggest a dinner I could cook for my sister this weekend? 她下周来上海看我。'
/** The per-character limit (SPEC §4.16): a person who has talked with the character for a long time. */
const MEMORIES = 2000

/** Memories as extraction or a person would write them: a template and two fillers each. */
const TEMPLATES: Array<[string, string[], string[]]> = [
  ['Their sister {a} lives in {b}.', ['Lena', 'Priya', 'Mei', 'Olivia', 'Sara', 'Yuki', 'Ana', 'Chloe', 'Hana', 'Ruth'], ['Berlin', 'Lisbon', 'Osaka', 'Toronto', 'Chengdu', 'Melbourne', 'Austin', 'Dublin', 'Hangzhou', 'Oslo']],
  ['Likes to cook {a} for dinner on {b}.', ['mapo tofu', 'lasagne', 'dumplings', 'ramen', 'a green curry', 'risotto', 'tomato and egg noodles', 'shakshuka', 'hotpot', 'paella'], ['Mondays', 'Tuesdays', 'Wednesdays', 'Thursdays', 'Fridays', 'Saturdays', 'Sundays', 'rainy days']],
  ['Works as a {a} in {b}.', ['nurse', 'software engineer', 'primary school teacher', 'graphic designer', 'accountant', 'barista', 'architect', 'physiotherapist', 'translator', 'lab technician'], ['Berlin', 'Lisbon', 'Osaka', 'Toronto', 'Chengdu', 'Melbourne', 'Austin', 'Dublin', 'Hangzhou', 'Oslo']],
  ['Has a {a} called {b}.', ['cat', 'dog', 'rabbit', 'parrot', 'hamster', 'tortoise'], ['Miso', 'Biscuit', 'Pepper', 'Mochi', 'Luna', 'Tofu', 'Oscar', 'Nori', 'Dumpling', 'Pixel']],
  ['Wants to learn {a} before {b}.', ['Spanish', 'the piano', 'bouldering', 'watercolour painting', 'Japanese', 'sourdough baking', 'swimming', 'chess', 'to drive', 'calligraphy'], ['the summer', 'their birthday', 'the end of the year', 'the wedding', 'moving abroad', 'spring']],
  ['Goes {a} every weekend with {b}.', ['running by the river', 'to the climbing gym', 'cycling', 'to the farmers market', 'hiking', 'swimming'], ['their sister', 'an old school friend', 'their partner', 'the neighbours', 'a colleague', 'their dad', 'the dog']],
  ['Their favourite dinner is {a}, the way {b} makes it.', ['mapo tofu', 'lasagne', 'dumplings', 'ramen', 'a green curry', 'risotto', 'roast chicken', 'hotpot', 'paella', 'beef stew'], ['their mum', 'their grandmother', 'their sister', 'their partner', 'the place downstairs', 'their dad']],
  ['Is planning a trip to {a} in {b}.', ['Iceland', 'Yunnan', 'Kyoto', 'Patagonia', 'the Highlands', 'Bali', 'Guilin', 'Norway', 'Morocco', 'Vietnam'], ['March', 'April', 'May', 'June', 'September', 'October', 'the winter holidays']],
  ['Plays the {a} in a small band with {b}.', ['guitar', 'violin', 'drums', 'cello', 'ukulele', 'bass', 'keyboard', 'erhu'], ['friends from work', 'their cousin', 'university friends', 'their sister', 'neighbours']],
  ['Is allergic to {a} and gets {b} from it.', ['peanuts', 'shellfish', 'sesame', 'kiwi', 'cat hair', 'pollen'], ['a rash', 'hay fever', 'a headache', 'very ill', 'a sore throat']],
  ['Usually cooks for their sister on {a} when she visits from {b}.', ['Fridays', 'Saturdays', 'Sundays', 'holidays', 'birthdays'], ['Berlin', 'Lisbon', 'Osaka', 'Toronto', 'Chengdu', 'Hangzhou', 'Oslo']],
  ['Is reading {a} {b}.', ['a thick fantasy novel', 'a book about habits', 'a biography of Marie Curie', 'a crime series', 'poetry', 'a history of tea'], ['on the train', 'before bed', 'slowly', 'with a book club', 'for the second time']],
  ['Drinks {a} every morning before {b}.', ['black coffee', 'green tea', 'oolong', 'a flat white', 'hot water with lemon', 'soy milk'], ['work', 'the gym', 'walking the dog', 'the school run', 'checking email']],
  ['Moved from {a} to {b} a few years ago.', ['Berlin', 'Lisbon', 'Osaka', 'Chengdu', 'Dublin'], ['Toronto', 'Melbourne', 'Austin', 'Hangzhou', 'Oslo', 'Shanghai']],
  ['Does not eat {a}, {b}.', ['meat', 'pork', 'spicy food', 'dairy', 'fried food', 'sugar'], ['for health reasons', 'since last year', 'on weekdays', 'because of their stomach', 'out of habit']],
  ['Their {a} is called {b}.', ['brother', 'best friend', 'partner', 'manager', 'flatmate', 'nephew', 'niece', 'cousin', 'grandfather', 'son'], ['Tom', 'Marco', 'Sam', 'Ben', 'Daniel', 'Jun', 'Ravi', 'Leo', 'Noah', 'Felix']],
  ['Their {a} lives in {b}.', ['brother', 'best friend', 'mother', 'father', 'grandmother', 'cousin', 'ex', 'godson'], ['Berlin', 'Lisbon', 'Osaka', 'Toronto', 'Chengdu', 'Melbourne', 'Austin', 'Dublin', 'Hangzhou', 'Oslo']],
  ['Grew up in {a} and misses {b}.', ['Berlin', 'Lisbon', 'Osaka', 'Toronto', 'Chengdu', 'Melbourne', 'Austin', 'Dublin', 'Hangzhou', 'Oslo'], ['the food', 'the sea', 'their school friends', 'the winters', 'the markets', 'the mountains', 'their grandmother\'s house', 'the quiet']],
  ['Has been feeling {a} since {b}.', ['stressed', 'tired', 'lonely', 'excited', 'anxious', 'restless', 'hopeful'], ['the move', 'starting the new job', 'the breakup', 'the exams began', 'their sister left', 'the holidays', 'the surgery', 'winter started']],
  ['Celebrates {a} with {b} every year.', ['Chinese New Year', 'Christmas', 'Diwali', 'the Mid-Autumn Festival', 'their birthday', 'Eid', 'Thanksgiving', 'Easter'], ['their sister', 'the whole family', 'old friends', 'their partner', 'their grandparents', 'colleagues']],
  ['Is trying to {a} after {b}.', ['sleep earlier', 'drink less coffee', 'run a half marathon', 'save money', 'eat more vegetables', 'call home more', 'read more', 'stop doomscrolling'], ['a health scare', 'a doctor visit', 'the new year', 'a bad month', 'their sister suggested it', 'a friend\'s advice']],
  ['Takes {a} to work, which takes {b}.', ['the metro', 'the bus', 'a bike', 'the ferry', 'the car', 'the tram'], ['ten minutes', 'half an hour', 'almost an hour', 'twenty minutes', 'forty minutes']],
  ['我妹妹{a}住在{b}。', ['小雨', '小敏', '佳佳', '婷婷', '晓晓', '阿兰'], ['上海', '北京', '成都', '杭州', '广州', '深圳', '西安', '南京', '武汉', '厦门']],
  ['周末喜欢给家人做{a}当晚饭，{b}。', ['红烧肉', '番茄炒蛋', '饺子', '麻婆豆腐', '酸菜鱼', '火锅', '糖醋排骨', '炸酱面'], ['大家都爱吃', '妹妹最喜欢', '总是做太多', '常常失败', '是妈妈教的']],
  ['在{a}当{b}。', ['上海', '北京', '成都', '杭州', '广州', '深圳', '西安', '南京'], ['护士', '程序员', '小学老师', '设计师', '会计', '建筑师', '翻译', '销售']],
  ['养了一只叫{a}的{b}。', ['豆豆', '团子', '年糕', '可乐', '布丁', '米饭', '花卷', '球球'], ['猫', '狗', '兔子', '鹦鹉', '仓鼠']],
  ['今年想学{a}，打算{b}开始。', ['游泳', '钢琴', '日语', '画画', '攀岩', '吉他', '做面包', '开车'], ['下个月', '下周', '暑假', '过完年', '春天']],
  ['下周要去{a}出差{b}。', ['上海', '北京', '成都', '杭州', '广州', '深圳', '西安', '南京', '武汉', '厦门'], ['两天', '三天', '一周', '几天']],
  ['每天早上喝一杯{a}，{b}。', ['咖啡', '绿茶', '豆浆', '牛奶', '乌龙茶', '热水'], ['不然没精神', '已经好几年了', '最近想戒掉', '在地铁上喝']],
  ['住在上海的{a}，离公司{b}。', ['徐汇', '静安', '浦东', '长宁', '杨浦', '闵行', '普陀', '虹口'], ['很近', '要一个小时', '骑车二十分钟', '坐地铁半小时', '走路十分钟']],
  ['小时候在{a}长大，{b}搬到上海。', ['北京', '成都', '杭州', '广州', '西安', '南京', '武汉', '厦门', '青岛', '长沙'], ['大学毕业后', '十年前', '前年', '工作以后', '结婚后']],
  ['哥哥在{a}做{b}。', ['上海', '北京', '成都', '杭州', '广州', '深圳', '西安', '南京', '武汉', '厦门'], ['护士', '程序员', '老师', '设计师', '会计', '厨师', '律师', '医生']],
  ['{a}的时候最喜欢吃{b}。', ['心情不好', '下雨', '过年', '加班', '周末', '生病'], ['火锅', '饺子', '小笼包', '麻辣烫', '红烧肉', '冰淇淋', '炸鸡', '粥']],
  ['和{a}约好{b}一起吃晚饭。', ['妹妹', '妈妈', '老同学', '男朋友', '女朋友', '同事', '室友'], ['下周五', '下周末', '这个周六', '月底', '国庆', '下周三']],
  ['打算{a}带{b}去上海迪士尼。', ['下周', '暑假', '国庆', '明年春天', '周末'], ['妹妹', '侄子', '女儿', '儿子', '爸妈', '朋友']],
  ['{a}在{b}上大学。', ['弟弟', '表妹', '侄女', '儿子', '女儿', '堂哥'], ['上海', '北京', '成都', '杭州', '广州', '深圳', '西安', '南京', '武汉', '厦门']],
  ['每周{a}去{b}。', ['一', '二', '三', '四', '五', '六', '日'], ['健身房', '游泳馆', '菜市场', '图书馆', '上瑜伽课', '看爷爷奶奶', '上钢琴课', '公园跑步']],
  ['最喜欢的电影是《{a}》，{b}。', ['霸王别姬', '千与千寻', '大话西游', '花样年华', '哪吒', '流浪地球', '你好，李焕英', '海上钢琴师'], ['看了很多遍', '每年都重看', '和妹妹一起看的', '第一次看哭了', '是爸爸推荐的']],
  ['{a}和朋友去{b}爬山。', ['上个周末', '去年秋天', '每个月', '国庆节', '春天'], ['黄山', '泰山', '华山', '峨眉山', '莫干山', '佘山']],
  ['对{a}过敏，{b}。', ['花生', '海鲜', '芒果', '猫毛', '花粉', '牛奶'], ['吃饭时要小心', '小时候才发现', '春天最难受', '出门带着药']],
  ['最近在读《{a}》，{b}。', ['活着', '三体', '围城', '平凡的世界', '红楼梦', '百年孤独'], ['睡前读一点', '读得很慢', '第二次读了', '和读书会一起读']],
]

/** Importance 1–5, weighted as extraction and people tend to rate: mostly 2–3, a quarter 4 or 5 (which recall adds even unmatched). */
const IMPORTANCE_WEIGHTS = [0.15, 0.25, 0.35, 0.17, 0.08]

interface SeedMemory { content: string, importance: number, source: 'auto' | 'user', createdAt: string, lastUsedAt: string | null }

/** MEMORIES distinct memories, English and Chinese mixed, written over the last year, some recalled since. */
function memoriesOf(seed: number, now: number): SeedMemory[] {
  const next = seededRandom(seed)
  const all = TEMPLATES.flatMap(([text, as, bs]) => as.flatMap(a => bs.map(b => text.replace('{a}', a).replace('{b}', b))))
  for (let index = all.length - 1; index > 0; index--) {
    const other = Math.floor(next() * (index + 1))
    ;[all[index], all[other]] = [all[other]!, all[index]!]
  }
  if (all.length < MEMORIES)
    throw new Error(`the memory templates make ${all.length} memories, fewer than ${MEMORIES}`)
  return all.slice(0, MEMORIES).map((content) => {
    let draw = next()
    const importance = 1 + IMPORTANCE_WEIGHTS.findIndex(weight => (draw -= weight) < 0)
    const created = now - next() * 365 * 86_400_000
    return {
      content,
      importance: importance > 0 ? importance : 3,
      source: next() < 0.8 ? 'auto' : 'user',
      createdAt: new Date(created).toISOString(),
      lastUsedAt: next() < 0.4 ? new Date(created + next() * (now - created)).toISOString() : null,
    }
  })
}

/** The checkout's own search text (the bench indexes exactly as its server does). */
interface MemoryText { searchText: (content: string) => string, tsQuery: (query: string) => string | null }

/**
 * MEMORIES memories of the account's character: all but the last in one INSERT with
 * the vector the service writes (`to_tsvector('simple', searchText(content))`), the
 * last through `memory.add`, whose stored vector must equal the bench's. Returns the
 * time of each path.
 */
async function seed(context: BenchContext, setup: Setup, account: Account, text: MemoryText, index: number): Promise<{ sqlMs: number, addMs: number }> {
  const memories = memoriesOf(index + 1, Date.now())
  const bulk = memories.slice(0, -1)
  const last = memories.at(-1)!
  const started = performance.now()
  await context.db.query(
    `insert into memory (user_id, character_id, content, importance, source, search_vector, created_at, updated_at, last_used_at)
     select $1, $2, t.content, t.importance, t.source, to_tsvector('simple', t.search_text), t.created_at, t.created_at, t.last_used_at
     from unnest($3::text[], $4::smallint[], $5::text[], $6::text[], $7::timestamptz[], $8::timestamptz[]) as t(content, importance, source, search_text, created_at, last_used_at)`,
    [account.userId, account.characterId, bulk.map(m => m.content), bulk.map(m => m.importance), bulk.map(m => m.source), bulk.map(m => text.searchText(m.content)), bulk.map(m => m.createdAt), bulk.map(m => m.lastUsedAt)],
  )
  const inserted = performance.now()
  const added = await trpcCall<{ id: string }>(setup.server.url, account.token, 'memory.add', { characterId: account.characterId, content: last.content, importance: last.importance }, 'mutation')
  const addMs = performance.now() - inserted
  const { rows: [check] } = await context.db.query<{ same: boolean, count: string }>(
    `select (select search_vector = to_tsvector('simple', $2) from memory where id = $1) as same,
            (select count(*) from memory where user_id = $3 and character_id = $4) as count`,
    [added.id, text.searchText(last.content), account.userId, account.characterId],
  )
  if (!check?.same)
    throw new Error('memory.add stored another search vector than the bench computes: the seeded memories would not be searched as the service\'s')
  if (Number(check.count) !== MEMORIES)
    throw new Error(`a seeded user has ${check.count} memories of its character, not ${MEMORIES}`)
  return { sqlMs: inserted - started, addMs }
}

interface Numbers { noneP50: number[], noneP95: number[], withP50: number[], withP95: number[] }

/** Paired turns: one of a user without memories, one of a user with MEMORIES, alternating which goes first. */
async function measure(context: BenchContext, setup: Setup, perSide: number, turns: number): Promise<Numbers> {
  const numbers: Numbers = { noneP50: [], noneP95: [], withP50: [], withP95: [] }
  let timed = 0
  for (let round = 0; round < context.rounds; round++) {
    const none: number[] = []
    const seeded: number[] = []
    for (let index = 0; index < turns; index++) {
      const user = Math.floor(timed++ / TIMED_TURNS_PER_USER)
      const [first, second] = index % 2 === 0 ? [setup.accounts[user]!, setup.accounts[perSide + user]!] : [setup.accounts[perSide + user]!, setup.accounts[user]!]
      const a = (await replyTurn(setup, first)).firstDelta
      const b = (await replyTurn(setup, second)).firstDelta
      none.push(index % 2 === 0 ? a : b)
      seeded.push(index % 2 === 0 ? b : a)
    }
    numbers.noneP50.push(percentile(none, 50))
    numbers.noneP95.push(percentile(none, 95))
    numbers.withP50.push(percentile(seeded, 50))
    numbers.withP95.push(percentile(seeded, 95))
    context.log(`memory round ${round + 1}: respond → 2nd device p50/p95 without memories ${formatNumber(numbers.noneP50.at(-1)!)}/${formatNumber(numbers.noneP95.at(-1)!)} ms, `
      + `with ${MEMORIES} ${formatNumber(numbers.withP50.at(-1)!)}/${formatNumber(numbers.withP95.at(-1)!)} ms`)
  }
  return numbers
}

const ms = (value: number) => `${formatSigned(value)} ms`

/**
 * `chats.respond` → the first `reply` delta on a 2nd device (reply's turn, one
 * instance), for users whose character keeps MEMORIES memories of them against
 * users with none, paired turn by turn in the same run on the same server: what
 * recall costs a turn at the limit.
 */
export const memory: Scenario = {
  name: 'memory',
  quick: true,
  async run(context: BenchContext): Promise<Row[]> {
    const turns = context.quick ? 20 : 200
    const perSide = Math.ceil(context.rounds * turns / TIMED_TURNS_PER_USER)
    // The last users: reply takes those after users[0], and each user's turns count against its message limit.
    const users = context.deployment.users.slice(-2 * perSide)
    if (users.length < 2 * perSide || context.deployment.users.length < 2 * perSide + 1)
      throw new Error(`memory needs ${2 * perSide} bench users besides the first, the deployment has ${context.deployment.users.length - 1}`)
    let text: MemoryText
    try {
      text = await import(pathToFileURL(join(context.serverRoot, 'packages/api/src/services/memory/text.ts')).href)
    }
    catch (error) {
      throw new Error(`the checkout has no long-term memory (packages/api/src/services/memory/text.ts): ${(error as Error).message}`)
    }
    let matched = { matched: 0, important: 0, candidates: 0 }
    const prepare = async (setup: Setup) => {
      const seeded = setup.accounts.slice(perSide)
      const times = []
      for (const [index, account] of seeded.entries())
        times.push(await seed(context, setup, account, text, index))
      // As autovacuum would soon after memories pile up: the planner sees the table as it is.
      await context.db.query('analyze memory')
      const { rows: [counts] } = await context.db.query<{ matched: string, important: string, candidates: string }>(
        `select count(*) filter (where search_vector @@ to_tsquery('simple', $3)) as matched, count(*) filter (where importance >= 4) as important,
                count(*) filter (where search_vector @@ to_tsquery('simple', $3) or importance >= 4) as candidates
         from memory where user_id = $1 and character_id = $2`,
        [seeded[0]!.userId, seeded[0]!.characterId, text.tsQuery(MESSAGE)],
      )
      matched = { matched: Number(counts!.matched), important: Number(counts!.important), candidates: Number(counts!.candidates) }
      const sqlMs = percentile(times.map(time => time.sqlMs), 50)
      const addMs = percentile(times.map(time => time.addMs), 50)
      context.log(`memory: seeded ${seeded.length} × ${MEMORIES} memories; one INSERT of ${MEMORIES - 1} took ${formatNumber(sqlMs)} ms, one memory.add ${formatNumber(addMs)} ms `
        + `(${MEMORIES} adds would take about ${formatNumber(addMs * MEMORIES / 1000)} s a user); the message matches ${matched.matched}, ${matched.important} have importance ≥ 4, ${matched.candidates} are recall candidates`)
    }
    const one = context.server
    const numbers = await withSetup(context, one, [one, one], users, setup => measure(context, setup, perSide, turns), { message: MESSAGE, prepare })
    const addedP50 = summarize(numbers.withP50.map((value, round) => value - numbers.noneP50[round]!))
    const addedP95 = summarize(numbers.withP95.map((value, round) => value - numbers.noneP95[round]!))
    const seeded = `${MEMORIES} memories (${matched.matched} match, ${matched.important} of importance ≥ 4)`
    return [
      {
        scenario: 'memory',
        metric: `respond → first reply delta on a 2nd device, ${seeded} vs none, p50 (${turns} turns/round each)`,
        baseline: `no memories ${formatSummary(summarize(numbers.noneP50), 'ms')}`,
        ours: formatSummary(summarize(numbers.withP50), 'ms'),
        ratio: ms(addedP50.median),
        target: 'added ≤ 5 ms',
        met: addedP50.median <= 5,
        data: { noneP50: summarize(numbers.noneP50), withP50: summarize(numbers.withP50), addedP50, ...matched },
      },
      {
        scenario: 'memory',
        metric: `${MEMORIES} memories vs none: p95`,
        baseline: `no memories ${formatSummary(summarize(numbers.noneP95), 'ms')}`,
        ours: formatSummary(summarize(numbers.withP95), 'ms'),
        ratio: ms(addedP95.median),
        target: '—',
        met: null,
        data: { noneP95: summarize(numbers.noneP95), withP95: summarize(numbers.withP95), addedP95 },
      },
    ]
  },
}
