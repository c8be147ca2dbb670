import type en from '../en/account.ts'

export default {
  title: '账户',
  profile: {
    title: '个人资料',
    email: '邮箱',
    name: '名字',
    noName: '未填写',
  },
  devices: {
    title: '登录与设备',
    text: '在任何设备上用这个邮箱登录即可：你的角色、聊天和 Flux 在各处都一样，并会实时同步。',
    signOut: '要在这台设备上退出登录，请打开右上角的菜单。忘记密码？登录页面可以给你发送一个重设密码的链接。',
  },
  apiKeys: {
    title: 'API 密钥',
    text: '让其他应用（如 SillyTavern 或你自己的脚本）用你的 Flux 使用 AI：每个应用一个密钥，可以限制额度，也可以随时撤销。',
    open: '管理 API 密钥',
  },
  export: {
    title: '你的数据',
    text: '一个 JSON 文件，包含我们保存的关于你的全部内容：个人资料、角色、聊天及其消息、服务商设置（不含密钥）、Flux 明细、订单和用量。',
    download: '下载我的数据',
    preparing: '正在准备你的数据…',
    saved: '已将 {file} 保存到你的下载文件夹。',
    tooOften: '你这一小时内已下载多次，请 {minutes} 分钟后再试。',
    cutOff: '下载中断了，请重试。',
  },
  delete: {
    title: '注销账户',
    text: '将删除你的角色、聊天和 Flux。付款记录会依法保留。',
    start: '注销我的账户…',
    confirm: '确定，给我发送确认邮件',
    keep: '保留我的账户',
    sent: '请查收邮件：打开我们发送到 {email} 的链接后，账户即被注销。',
    signInAgain: '要注销账户，请先在登录页面重新登录（你在那里的浏览器会话已过期）。',
  },
} satisfies typeof en
