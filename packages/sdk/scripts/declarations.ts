import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

import ts from 'typescript'

const packagesDir = fileURLToPath(new URL('../..', import.meta.url))

// Workspace packages whose declarations the SDK's bundle inlines; none of them is shipped.
const workspaceEntries: Record<string, string> = {
  '@airi/api': join(packagesDir, 'api/src/index.ts'),
  '@airi/db': join(packagesDir, 'db/src/index.ts'),
}

// TypeScript names files with forward slashes on every platform.
const contextFile = join(packagesDir, 'api/src/context.ts').replaceAll('\\', '/')

function fail(diagnostics: readonly ts.Diagnostic[]): never {
  throw new Error(ts.formatDiagnostics(diagnostics, {
    getCanonicalFileName: name => name,
    getCurrentDirectory: () => packagesDir,
    getNewLine: () => '\n',
  }))
}

function relativeSpecifier(fromFile: string, toFile: string): string {
  const path = relative(dirname(fromFile), toFile).replaceAll('\\', '/')
  return path.startsWith('.') ? path : `./${path}`
}

/**
 * Points `@airi/api` and `@airi/db` at their emitted declarations, so the bundler
 * inlines the few types the router needs instead of importing unshipped packages.
 */
function inlineWorkspaceImports(context: ts.TransformationContext) {
  const { factory } = context
  return (file: ts.SourceFile | ts.Bundle) => {
    if (!ts.isSourceFile(file))
      return file
    const target = (specifier: ts.Expression) => {
      const entry = ts.isStringLiteral(specifier) ? workspaceEntries[specifier.text] : undefined
      return entry ? factory.createStringLiteral(relativeSpecifier(file.fileName, entry)) : undefined
    }
    const visit = (node: ts.Node): ts.Node => {
      if (ts.isImportDeclaration(node)) {
        const to = target(node.moduleSpecifier)
        if (to)
          return factory.updateImportDeclaration(node, node.modifiers, node.importClause, to, node.attributes)
      }
      if (ts.isExportDeclaration(node) && node.moduleSpecifier) {
        const to = target(node.moduleSpecifier)
        if (to)
          return factory.updateExportDeclaration(node, node.modifiers, node.isTypeOnly, node.exportClause, to, node.attributes)
      }
      if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
        const to = target(node.argument.literal)
        if (to)
          return factory.updateImportTypeNode(node, factory.createLiteralTypeNode(to), node.attributes, node.qualifier, node.typeArguments, node.isTypeOf)
      }
      return ts.visitEachChild(node, visit, context)
    }
    return ts.visitEachChild(file, visit, context)
  }
}

/**
 * The router's type names the server's request context (services, database, auth
 * library…). A tRPC client reads only the procedures, the error shape and the
 * transformer, so the shipped `Context` has no members: nothing of the server's
 * internals, or of the packages behind them, reaches the SDK's declarations.
 */
function opaqueContext(context: ts.TransformationContext) {
  const { factory } = context
  return (file: ts.SourceFile | ts.Bundle) => {
    if (!ts.isSourceFile(file) || file.fileName !== contextFile)
      return file
    let found = false
    const statements = file.statements.map((statement) => {
      if (!ts.isInterfaceDeclaration(statement) || statement.name.text !== 'Context')
        return statement
      found = true
      return factory.updateInterfaceDeclaration(statement, statement.modifiers, statement.name, statement.typeParameters, statement.heritageClauses, [])
    })
    if (!found)
      throw new Error(`no Context interface in ${file.fileName}: update packages/sdk/scripts/declarations.ts`)
    return factory.updateSourceFile(file, statements)
  }
}

/**
 * Emits the declarations of the SDK and of the workspace packages its types come
 * from into `outDir` (`<outDir>/sdk/src/index.d.ts` is the entry to bundle). Types
 * are not checked here: `pnpm typecheck` does that.
 */
export function emitDeclarations(outDir: string): string {
  const config = ts.getParsedCommandLineOfConfigFile(join(packagesDir, 'sdk/tsconfig.json'), {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: diagnostic => fail([diagnostic]),
  })
  if (!config)
    throw new Error('cannot read packages/sdk/tsconfig.json')
  const program = ts.createProgram({
    // The workspace entries come first so their files count as the program's own
    // (emitted), not as a library reached through node_modules.
    rootNames: [...Object.values(workspaceEntries), join(packagesDir, 'sdk/src/index.ts')],
    options: {
      ...config.options,
      noEmit: false,
      declaration: true,
      emitDeclarationOnly: true,
      noCheck: true,
      rootDir: packagesDir,
      outDir,
    },
  })
  const result = program.emit(undefined, undefined, undefined, true, { afterDeclarations: [inlineWorkspaceImports, opaqueContext] })
  if (result.emitSkipped || result.diagnostics.length > 0)
    fail(result.diagnostics)
  return join(outDir, 'sdk/src/index.d.ts')
}
