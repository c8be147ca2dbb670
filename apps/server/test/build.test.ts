import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { findFreePort } from '@airi/db'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { createVerifiedUser, startTestServer, type TestServer } from './harness.ts'

const run = promisify(execFile)
const serverDir = fileURLToPath(new URL('..', import.meta.url))
const rootDir = fileURLToPath(new URL('../../..', import.meta.url))
const sdkDir = join(rootDir, 'packages/sdk')
const tscPath = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin/tsc')

async function command(file: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  try {
    const { stdout, stderr } = await run(file, args, { cwd, env, maxBuffer: 64 * 1024 * 1024 })
    return stdout + stderr
  }
  catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string, stderr?: string }
    throw new Error(`${file} ${args.join(' ')} failed in ${cwd}:\n${stdout}${stderr}`)
  }
}

/** The bare module names a JavaScript or declaration file imports. */
function importedPackages(code: string): Set<string> {
  const names = new Set<string>()
  for (const match of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"'.][^"']*)["']/g))
    names.add(match[1]!.startsWith('@') ? match[1]!.split('/').slice(0, 2).join('/') : match[1]!.split('/')[0]!)
  return names
}

// `pnpm build` once for the file: the compiled server and the SDK's package both come from it.
beforeAll(async () => {
  await command('pnpm', ['build'], rootDir)
}, 300_000)

describe('NODE_ENV=production pnpm start', () => {
  let database: TestDatabase
  let child: ChildProcess | undefined
  let output = ''

  beforeAll(async () => {
    database = await createTestDatabase()
  })
  afterAll(async () => {
    child?.kill('SIGKILL')
    await database.drop()
  })

  it('runs the compiled server with plain Node, not the TypeScript sources', { timeout: 120_000 }, async () => {
    const port = await findFreePort()
    const baseUrl = `http://127.0.0.1:${port}`
    const scripts = JSON.parse(await readFile(join(serverDir, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
    const [node, ...args] = scripts.scripts.start!.split(' ')
    expect(node).toBe('node')
    // Node 22.18+ would load a stray .ts file by stripping its types; refuse that
    // so the run proves only JavaScript from dist/ was loaded.
    const noStripTypes = process.allowedNodeEnvironmentFlags.has('--no-experimental-strip-types') ? ['--no-experimental-strip-types'] : []
    child = spawn(process.execPath, [...noStripTypes, ...args], {
      cwd: serverDir,
      env: {
        PATH: process.env.PATH,
        NODE_ENV: 'production',
        DATABASE_URL: database.url,
        REDIS_URL: inject('redisUrl'),
        REDIS_KEY_PREFIX: testRedisPrefix(),
        BETTER_AUTH_SECRET: 'build-test-secret-0123456789abcdefghijklmnop',
        API_SERVER_URL: baseUrl,
        RESEND_API_KEY: 're_build_test',
        STRIPE_SECRET_KEY: 'sk_test_build',
        STRIPE_WEBHOOK_SECRET: 'whsec_build',
        LLM_ROUTER_MASTER_KEY: Buffer.alloc(32, 9).toString('hex'),
        HOST: '127.0.0.1',
        PORT: String(port),
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk))
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk))
    const exited = new Promise<number | null>(resolve => child!.once('exit', code => resolve(code)))

    // A production start migrates first: a longer deadline than the usual one.
    await until(async () => {
      if (child!.exitCode !== null)
        throw new Error(`the compiled server exited with ${child!.exitCode}:\n${output}`)
      return fetch(`${baseUrl}/readyz`).then(response => response.status === 200, () => false)
    }, 'the compiled server to be ready', 60_000)
    const info = await fetch(`${baseUrl}/trpc/meta.info`).then(response => response.json()) as { result: { data: { json: { service: string } } } }
    expect(info.result.data.json.service).toBe('airi-server')

    child.kill('SIGTERM')
    expect(await exited, output).toBe(0)
    expect(output).toContain('shutdown complete')
  })
})

describe('the packed @airi/sdk', () => {
  let server: TestServer
  let projectDir: string

  beforeAll(async () => {
    server = await startTestServer({ redisUrl: false })
    projectDir = await mkdtemp(join(tmpdir(), 'airi-sdk-user-'))
  })
  afterAll(async () => {
    await server.close()
    await rm(projectDir, { recursive: true, force: true })
  })

  it('installs into a project of its own, type-checks and calls the server', { timeout: 180_000 }, async () => {
    await command('pnpm', ['pack', '--pack-destination', projectDir], sdkDir)
    const tarball = (await readdir(projectDir)).find(name => name.endsWith('.tgz'))
    expect(tarball).toBeDefined()

    // A third party's project: npm, nothing of our workspace.
    await writeFile(join(projectDir, 'package.json'), JSON.stringify({ name: 'sdk-user', private: true, type: 'module' }))
    // Peers are left out: @trpc/server is a dependency of the SDK, and TypeScript is ours to bring.
    await command('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--omit=peer', `./${tarball}`], projectDir)

    const installed = join(projectDir, 'node_modules/@airi/sdk')
    const manifest = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8')) as { exports: unknown, dependencies: Record<string, string> }
    expect(manifest.exports).toEqual({ '.': { types: './dist/index.d.ts', default: './dist/index.js' } })
    expect((await readdir(installed)).sort()).toEqual(['dist', 'package.json'])
    // No server code and no workspace package: only the SDK's own dependencies are imported.
    const allowed = new Set(Object.keys(manifest.dependencies))
    for (const file of ['dist/index.js', 'dist/index.d.ts']) {
      const imported = [...importedPackages(await readFile(join(installed, file), 'utf8'))]
      expect(imported.filter(name => !allowed.has(name)), file).toEqual([])
    }

    await writeFile(join(projectDir, 'client.ts'), `
import { createAiriClient, TRPCClientError, type AiriClient } from '@airi/sdk'

const client: AiriClient = createAiriClient({ baseUrl: process.env.AIRI_URL!, getToken: () => process.env.AIRI_TOKEN })
const info = await client.meta.info.query()
const me = await client.auth.me.query()
const email: string = me.user.email
// The router's types arrived: each of these is an error, so tsc fails if they went missing (any).
// @ts-expect-error no such procedure
void client.meta.noSuchProcedure
// @ts-expect-error the version is a string
const wrong: number = info.version
const _neverCalled = () => {
  // @ts-expect-error characters.create takes an object
  return client.characters.create.mutate(42)
}
const anonymous = createAiriClient({ baseUrl: process.env.AIRI_URL! })
const refused = await anonymous.auth.me.query().then(() => 'allowed', (error: unknown) => error instanceof TRPCClientError ? error.data?.httpStatus : 'other')
console.log(JSON.stringify({ service: info.service, email, refused, wrong: typeof wrong }))
`)
    await writeFile(join(projectDir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        // tRPC's own declarations use Disposable; DOM brings fetch and WebSocket.
        lib: ['ES2023', 'ESNext.Disposable', 'DOM'],
        types: [],
        // Our declarations are checked too, not skipped.
        skipLibCheck: false,
        outDir: 'out',
      },
      include: ['client.ts', 'env.d.ts'],
    }))
    await writeFile(join(projectDir, 'env.d.ts'), 'declare const process: { env: Record<string, string | undefined> }\n')
    await command(process.execPath, [tscPath, '-p', '.'], projectDir)

    const user = await createVerifiedUser(server)
    const printed = await command(process.execPath, ['out/client.js'], projectDir, { PATH: process.env.PATH, AIRI_URL: server.baseUrl, AIRI_TOKEN: user.token })
    expect(JSON.parse(printed.trim())).toEqual({ service: 'airi-server', email: user.email, refused: 401, wrong: 'string' })
  })
})
